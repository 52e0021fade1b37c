// The native binding (crates/famez-node), loaded through napi-rs's generated
// loader: the local .node file in a checkout, else the prebuilt platform
// package. Nothing above this module touches an fd except to hand it back.
import type * as Binding from '../index.js';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const binding: typeof Binding = require('../index.js');

export const { EventFd, GuestDevice, Mailbox, PidFile, Ring, SharedMemory, preallocate, UnixListener, UnixStream, closeFd, fdLimit, fdSize, groupId, raiseFdLimit, ringLayout, sdNotify, socketState } = binding;
/** libfabric links (ts/link/ofi.ts wraps them): libfabric is loaded only when one is opened. */
export const { OfiLink, OfiListener, OfiWindow, libfabricAvailable } = binding;
/** Rings the open EventFd whose number is `fd` (EBADF otherwise): the hot
 * path's EventFd.signal, a plain Node-API function without the class
 * method's unwrapping. */
export const signalFd = binding.signalFdFunction();
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
