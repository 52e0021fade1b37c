// Kernel modules for the initramfs: which files, in which load order, from
// a kernel's modules.dep. Pure (the file's text in, paths out).
//
// modules.dep has one line per module, `path: dep1 dep2 ...`, paths relative
// to /lib/modules/VER; the dependencies are listed nearest first, so they
// load last-to-first (modprobe's order).

/** The modules the guest needs to mount the host's root over 9p (virtio-pci
 * transport), in the order they load. */
export const GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  '9pnet',
  '9pnet_virtio',
  'netfs',
  'fscache',
  '9p',
] as const;

/** A module's name as the kernel knows it: file name without .ko[.xz|.zst|.gz], '-' as '_'. */
export function moduleName(path: string): string {
  return (path.split('/').at(-1) ?? path).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

export type ModulesDep = Map<string, { path: string; deps: string[] }>;

export function parseModulesDep(text: string): ModulesDep {
  const map: ModulesDep = new Map();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean);
    map.set(moduleName(path), { path, deps: deps.map(moduleName) });
  }
  return map;
}

export interface ModuleFile {
  name: string;
  /** Relative to the kernel's modules directory. */
  path: string;
}

/** The files to load for `wanted`, every module after its dependencies,
 * each once. A wanted module missing from modules.dep is either built into
 * the kernel (listed in `builtin`, skipped) or an error. */
export function resolveModules(dep: ModulesDep, wanted: readonly string[], builtin: ReadonlySet<string> = new Set()): ModuleFile[] {
  const out: ModuleFile[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]) => {
    if (seen.has(name)) return;
    const m = dep.get(name);
    if (!m) {
      if (builtin.has(name)) return;
      throw new Error(`module ${name}${chain.length ? ` (needed by ${chain.join(' <- ')})` : ''} is neither in modules.dep nor built in`);
    }
    seen.add(name);
    for (const d of [...m.deps].reverse()) visit(d, [name, ...chain]);
    out.push({ name, path: m.path });
  };
  for (const w of wanted) visit(moduleName(w), []);
  return out;
}

/** Names in modules.builtin (one path per line). */
export function parseBuiltin(text: string): Set<string> {
  return new Set(text.split('\n').filter(Boolean).map(moduleName));
}
