// The native binding (crates/famez-node), loaded through napi-rs's generated
// loader: the local .node file in a checkout, else the prebuilt platform
// package. Nothing above this module touches an fd except to hand it back.
//
// A binding that does not load is one NativeBindingError, a sentence naming
// the platform package that was expected and how to get it (not napi's chain
// of every candidate it tried). It is thrown at the first use, not at import,
// so `famez --version`, the codecs and the stanza helpers work without it and
// the CLI reports it as one line.
import * as fs from 'node:fs';
import * as path from 'node:path';

import type * as Binding from '../index.js';
import { FamezError } from './errors.js';

/** The native binding could not be loaded: missing (`ENOBINDING`), or there
 * but refused by this system (`EBINDING`: a wrong libc, a corrupt file). */
export class NativeBindingError extends FamezError<'ENOBINDING' | 'EBINDING'> {
  override name = 'NativeBindingError';
}

const ROOT = path.resolve(__dirname, '..');

/** napi-rs's name for this platform: linux-x64-gnu, linux-arm64-musl, ... */
export function platformSuffix(): string {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return `linux-${process.arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

/** What went wrong, in one sentence, once napi's loader threw `thrown`. */
function bindingError(thrown: unknown): NativeBindingError {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    name: string;
    version: string;
    napi?: { binaryName?: string; targets?: string[] };
  };
  const suffix = platformSuffix();
  const wanted = `${pkg.name}-${suffix}`;
  const local = path.join(ROOT, `${pkg.napi?.binaryName ?? pkg.name}.${suffix}.node`);
  let found: string | null = fs.existsSync(local) ? local : null;
  try {
    found ??= require.resolve(wanted, { paths: [ROOT] });
  } catch {
    // not installed: said below
  }
  if (found !== null) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      require(found);
    } catch (e) {
      return new NativeBindingError('EBINDING', `the native binding ${found} does not load on this ${suffix} system: ${firstLine(e)}`);
    }
    // The binary loads by itself: napi's loader failed for another reason (its environment variables, say).
    return new NativeBindingError('EBINDING', `napi-rs's loader ${path.join(ROOT, 'index.js')} failed although ${found} loads: ${firstLine(thrown)}`);
  }
  const supported = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl'];
  if (!supported.includes(suffix)) {
    return new NativeBindingError('ENOBINDING', `no native binding for ${suffix}: famez runs on Linux x64 or arm64 (glibc or musl), with the packages ${supported.map((s) => `${pkg.name}-${s}`).join(', ')}`);
  }
  if (fs.existsSync(path.join(ROOT, 'crates', 'famez-node', 'Cargo.toml'))) {
    return new NativeBindingError('ENOBINDING', `no native binding for ${suffix}: ${path.basename(local)} is not built in this checkout; run 'npm run build' (it needs Rust's cargo, https://rustup.rs)`);
  }
  return new NativeBindingError(
    'ENOBINDING',
    `no native binding for ${suffix}: the package ${wanted}@${pkg.version} is not installed (npm installs it with famez unless optional dependencies are omitted: run 'npm install ${wanted}@${pkg.version}', or reinstall famez with --include=optional)`,
  );
}

/** A stand-in for every export of a binding that did not load: it throws the
 * one error when it is called, constructed or looked into. */
function unavailable(error: NativeBindingError): typeof Binding {
  const fail = (): never => {
    throw error;
  };
  const standIn = new Proxy(function () {}, { apply: fail, construct: fail, get: fail, set: fail, has: fail });
  return new Proxy({} as typeof Binding, { get: () => standIn });
}

function load(): { binding: typeof Binding; error: NativeBindingError | null } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { binding: require('../index.js') as typeof Binding, error: null };
  } catch (e) {
    const error = bindingError(e);
    return { binding: unavailable(error), error };
  }
}

const loaded = load();
const binding = loaded.binding;

/** Why the native binding did not load (null when it did). */
export const bindingLoadError: NativeBindingError | null = loaded.error;

export const { EventFd, GuestDevice, Mailbox, PidFile, Ring, SharedMemory, preallocate, UnixListener, UnixStream, closeFd, fdLimit, fdSize, groupId, raiseFdLimit, ringLayout, sdNotify, socketState, yieldCpu } = binding;
/** Gen-Z CRCs for packets end to end in one buffer of the process's own (crates/famez-core/src/genz.rs). */
export const { genzCheck, genzEcrc, genzSeal } = binding;
/** libfabric links (ts/link/ofi.ts wraps them): libfabric is loaded only when one is opened. */
export const { OfiLink, OfiListener, OfiWindow, libfabricAvailable } = binding;
/** The link end's state machine in the native core (ts/link/native-streams.ts wraps it). */
export const { LinkEndCore } = binding;
/** Rings the open EventFd whose number is `fd` (EBADF otherwise): the hot
 * path's EventFd.signal, a plain Node-API function without the class
 * method's unwrapping. */
export const signalFd: ReturnType<typeof Binding.signalFdFunction> = loaded.error === null ? binding.signalFdFunction() : binding.signalFdFunction;
export type EventFd = Binding.EventFd;
export type GuestDevice = Binding.GuestDevice;
export type PidFile = Binding.PidFile;
export type SharedMemory = Binding.SharedMemory;
export type UnixListener = Binding.UnixListener;
export type UnixStream = Binding.UnixStream;
export type ShmOptions = Binding.ShmOptions;
export type Mailbox = Binding.Mailbox;
export type Ring = Binding.Ring;
export type FdLimit = Binding.FdLimit;
export type OfiLink = Binding.OfiLink;
export type OfiListener = Binding.OfiListener;
export type OfiWindow = Binding.OfiWindow;
export type LinkEndCore = Binding.LinkEndCore;
export type { LibfabricProbe, LinkOptions, MailboxGlobals, MailboxSlot, PathState, ReceivedMessage, RemoteWindowInfo, RingLayoutInfo, RingLayoutOptions } from '../index.js';

/** What the binding throws: an Error whose `code` names what went wrong
 * ('EBADMSG', 'ENOENT', 'EMSGSIZE', 'EBADF', ...; napi's own status name,
 * such as 'GenericFailure', for a failed Node-API call). Its message, for a
 * person, starts with the same code ("ENOENT: ..."), as Node's fs errors do. */
export interface NativeError extends Error {
  code: string;
}

/** The code of an error the binding threw ('' for anything else). */
export function errorCode(e: unknown): string {
  return e instanceof Error && typeof (e as Partial<NativeError>).code === 'string' ? (e as NativeError).code : '';
}

/** The message of an error the binding threw, without its leading code. */
export function errorText(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const code = errorCode(e);
  return code !== '' && message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message;
}
