// The sandbox (pause) process of the tests' pods, as registry.k8s.io/pause does it: hold the pod's namespaces,
// reap children (it is pid 1 of a shared pid namespace), exit 0 on SIGINT/SIGTERM. Built statically, offline,
// by test/helpers/cri/pause-image.ts.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
