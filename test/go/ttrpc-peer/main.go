// ttrpc-peer: a tiny containerd/ttrpc (Go) client and server used to prove that kata-ts's TypeScript ttrpc
// interoperates with the reference implementation, and to benchmark the two against each other.
//
// It serves grpc.Health (Check, Version) with hand-encoded protobuf messages so that it builds from Debian's
// golang-github-containerd-ttrpc-dev alone (GOPATH=/usr/share/gocode GO111MODULE=off go build).
//
//	ttrpc-peer server <socket>                        serve until stdin closes or SIGTERM; prints "ready"
//	ttrpc-peer client <socket>                        run the interop cases, one JSON object per line
//	ttrpc-peer bench <socket> <calls> <concurrency>   unary Check calls; prints one JSON summary line
//
// Behaviour of the served methods, chosen by CheckRequest.service:
//
//	Check "error:<code>:<message>"  fails with that status
//	Check "sleep:<ms>"              waits, or fails with the context's error when the deadline passes first
//	Check anything else             answers SERVING (1)
//	Version "md:<key>"              grpc_version = the metadata values for key joined by ","
//	Version "deadline"              grpc_version = "none" or "set"; agent_version = remaining ms
//	Version "big:<n>"               agent_version = n bytes of 'x' (to provoke oversized responses)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// raw carries already-encoded protobuf bytes; gogo's proto.Marshal/Unmarshal use these methods directly.
type raw struct{ b []byte }

func (r *raw) Reset()                   { r.b = nil }
func (r *raw) String() string           { return fmt.Sprintf("raw(%d bytes)", len(r.b)) }
func (r *raw) ProtoMessage()            {}
func (r *raw) Marshal() ([]byte, error) { return r.b, nil }
func (r *raw) Unmarshal(b []byte) error { r.b = append([]byte(nil), b...); return nil }

// stringFields decodes the string/bytes fields of a flat message (unknown wire types are skipped).
func stringFields(b []byte) (map[protowire.Number]string, map[protowire.Number]uint64, error) {
	strs := map[protowire.Number]string{}
	ints := map[protowire.Number]uint64{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			strs[num] = string(v)
			b = b[m:]
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			ints[num] = v
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return strs, ints, nil
}

func encodeString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func encodeCheckRequest(service string) *raw { return &raw{encodeString(nil, 1, service)} }

func encodeHealthResponse(st uint64) *raw {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	return &raw{protowire.AppendVarint(b, st)}
}

func encodeVersionResponse(grpcVersion, agentVersion string) *raw {
	return &raw{encodeString(encodeString(nil, 1, grpcVersion), 2, agentVersion)}
}

func requestService(unmarshal func(interface{}) error) (string, error) {
	var in raw
	if err := unmarshal(&in); err != nil {
		return "", err
	}
	strs, _, err := stringFields(in.b)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "CheckRequest: %v", err)
	}
	return strs[1], nil
}

func check(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	svc, err := requestService(unmarshal)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(svc, "error:"):
		parts := strings.SplitN(svc, ":", 3)
		code, _ := strconv.Atoi(parts[1])
		msg := ""
		if len(parts) > 2 {
			msg = parts[2]
		}
		return nil, status.Error(codes.Code(code), msg)
	case strings.HasPrefix(svc, "sleep:"):
		ms, _ := strconv.Atoi(strings.TrimPrefix(svc, "sleep:"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return encodeHealthResponse(1), nil
}

func version(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	svc, err := requestService(unmarshal)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(svc, "md:"):
		md, _ := ttrpc.GetMetadata(ctx)
		vals, _ := md.Get(strings.TrimPrefix(svc, "md:"))
		return encodeVersionResponse(strings.Join(vals, ","), ""), nil
	case svc == "deadline":
		dl, ok := ctx.Deadline()
		if !ok {
			return encodeVersionResponse("none", ""), nil
		}
		return encodeVersionResponse("set", strconv.FormatInt(time.Until(dl).Milliseconds(), 10)), nil
	case strings.HasPrefix(svc, "big:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(svc, "big:"))
		return encodeVersionResponse("", strings.Repeat("x", n)), nil
	}
	return encodeVersionResponse("ttrpc-go", "peer"), nil
}

func serve(path string) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	srv.Register("grpc.Health", map[string]ttrpc.Method{"Check": check, "Version": version})
	go func() {
		// Stop when the parent goes away (stdin closes) or asks (SIGTERM), so tests never leak this process.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		eof := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
		select {
		case <-sigs:
		case <-eof:
		}
		srv.Close()
		os.Exit(0)
	}()
	fmt.Println("ready")
	err = srv.Serve(context.Background(), l)
	if err == ttrpc.ErrServerClosed {
		return nil
	}
	return err
}

// result is one interop case as the TypeScript test reads it.
type result struct {
	Case    string            `json:"case"`
	Code    int               `json:"code"`
	Message string            `json:"message,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
}

func outcome(name string, out *raw, err error) result {
	r := result{Case: name}
	if err != nil {
		st, ok := status.FromError(err)
		if ok {
			r.Code, r.Message = int(st.Code()), st.Message()
		} else {
			r.Code, r.Message = int(codes.Unknown), err.Error()
		}
		return r
	}
	strs, ints, derr := stringFields(out.b)
	if derr != nil {
		return result{Case: name, Code: int(codes.Internal), Message: derr.Error()}
	}
	r.Fields = map[string]string{}
	for k, v := range strs {
		r.Fields[strconv.Itoa(int(k))] = v
	}
	for k, v := range ints {
		r.Fields[strconv.Itoa(int(k))] = strconv.FormatUint(v, 10)
	}
	return r
}

func dial(path string) (*ttrpc.Client, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return ttrpc.NewClient(conn), nil
}

// withTimeoutNano makes the client send timeout_nano without a local context deadline, so the server alone
// decides when the call has run out of time.
func withTimeoutNano(d time.Duration) ttrpc.ClientOpts {
	return ttrpc.WithUnaryClientInterceptor(func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response,
		_ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
		req.TimeoutNano = d.Nanoseconds()
		return invoke(ctx, req, resp)
	})
}

func runClient(path string) error {
	c, err := dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	enc := json.NewEncoder(os.Stdout)
	call := func(ctx context.Context, cl *ttrpc.Client, method, svc string) (*raw, error) {
		var out raw
		err := cl.Call(ctx, "grpc.Health", method, encodeCheckRequest(svc), &out)
		return &out, err
	}
	emit := func(name string, out *raw, err error) { _ = enc.Encode(outcome(name, out, err)) }
	bg := context.Background()

	out, err := call(bg, c, "Check", "ok")
	emit("check-ok", out, err)
	out, err = call(bg, c, "Check", "error:5:no such thing")
	emit("check-error", out, err)
	out, err = call(ttrpc.WithMetadata(bg, ttrpc.MD{"x-kata": {"a", "b"}}), c, "Version", "md:x-kata")
	emit("metadata", out, err)
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	out, err = call(ctx, c, "Version", "deadline")
	cancel()
	emit("deadline-sent", out, err)
	out, err = call(bg, c, "Nope", "")
	emit("unknown-method", out, err)
	var nope raw
	err = c.Call(bg, "no.Such", "Method", encodeCheckRequest(""), &nope)
	emit("unknown-service", &nope, err)

	// The TS server must end the call itself once timeout_nano has passed.
	tconn, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	tclient := ttrpc.NewClient(tconn, withTimeoutNano(200*time.Millisecond))
	start := time.Now()
	out, err = call(bg, tclient, "Check", "sleep:60000")
	r := outcome("server-deadline", out, err)
	r.Fields = map[string]string{"elapsed_ms": strconv.FormatInt(time.Since(start).Milliseconds(), 10)}
	_ = enc.Encode(r)
	_ = tclient.Close()

	// Local deadline: the Go client gives up on its own.
	ctx, cancel = context.WithTimeout(bg, 100*time.Millisecond)
	out, err = call(ctx, c, "Check", "sleep:60000")
	cancel()
	r = outcome("client-deadline", out, err)
	if err == context.DeadlineExceeded {
		r.Code, r.Message = int(codes.DeadlineExceeded), err.Error()
	}
	_ = enc.Encode(r)

	// Many calls in flight on one connection.
	var wg sync.WaitGroup
	var mu sync.Mutex
	okCount := 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := call(bg, c, "Check", "sleep:20"); err == nil {
				mu.Lock()
				okCount++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	_ = enc.Encode(result{Case: "concurrent", Fields: map[string]string{"ok": strconv.Itoa(okCount)}})

	// An oversized request: ttrpc 1.1 sends it anyway; the server must discard it, answer ResourceExhausted
	// and keep the connection.
	out, err = call(bg, c, "Check", strings.Repeat("y", 5<<20))
	emit("oversized-request", out, err)
	out, err = call(bg, c, "Check", "after-oversized")
	emit("after-oversized", out, err)
	return nil
}

func runBench(path string, calls, concurrency int) error {
	c, err := dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	req := encodeCheckRequest("bench")
	one := func() (time.Duration, error) {
		var out raw
		start := time.Now()
		err := c.Call(context.Background(), "grpc.Health", "Check", req, &out)
		return time.Since(start), err
	}
	for i := 0; i < calls/10+100; i++ { // warm-up
		if _, err := one(); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, calls)
	var next int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if int(i) >= calls {
					return
				}
				d, err := one()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				lat[i] = d
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	us := func(q float64) float64 { return float64(lat[int(q*float64(calls-1))].Nanoseconds()) / 1e3 }
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"calls":       calls,
		"concurrency": concurrency,
		"seconds":     elapsed.Seconds(),
		"calls_per_s": float64(calls) / elapsed.Seconds(),
		"p50_us":      us(0.5),
		"p99_us":      us(0.99),
	})
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: ttrpc-peer server|client|bench <socket> [calls concurrency]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(os.Args[2])
	case "client":
		err = runClient(os.Args[2])
	case "bench":
		if len(os.Args) < 5 {
			err = fmt.Errorf("bench needs <calls> <concurrency>")
			break
		}
		calls, cerr := strconv.Atoi(os.Args[3])
		conc, nerr := strconv.Atoi(os.Args[4])
		if cerr != nil || nerr != nil || calls < 1 || conc < 1 {
			err = fmt.Errorf("bench: bad <calls> %q or <concurrency> %q", os.Args[3], os.Args[4])
			break
		}
		err = runBench(os.Args[2], calls, conc)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-peer %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
