// PCI paths as Kata writes them ("03/00": slot on the root bus, then slot behind each bridge), found in the
// tree QEMU reports with query-pci.
import type { PciBusInfo, PciDevice } from './qmp.js';

function walk(devices: PciDevice[], qdevId: string, trail: number[]): number[] | undefined {
  for (const d of devices) {
    const here = [...trail, d.slot];
    if (d.qdev_id === qdevId) return here;
    const children = d.pci_bridge?.devices;
    if (children) {
      const found = walk(children, qdevId, here);
      if (found) return found;
    }
  }
  return undefined;
}

/** The Kata PCI path of the device with QEMU id `qdevId`, or undefined when it is not on the PCI tree. */
export function pciPathOf(buses: PciBusInfo[], qdevId: string): string | undefined {
  for (const bus of buses) {
    const slots = walk(bus.devices, qdevId, []);
    if (slots) return slots.map((s) => s.toString(16).padStart(2, '0')).join('/');
  }
  return undefined;
}
