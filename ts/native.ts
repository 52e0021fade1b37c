// The native binding (crates/famez-node), loaded through napi-rs's generated
// loader: the local .node file in a checkout, else the prebuilt platform
// package. Nothing above this module touches an fd except to hand it back.
import type * as Binding from '../index.js';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const binding: typeof Binding = require('../index.js');

export const { EventFd, Mailbox, PidFile, Ring, SharedMemory, UnixListener, UnixStream, closeFd, fdLimit, fdSize, raiseFdLimit, ringLayout, socketState } = binding;
/** Rings the open EventFd whose number is `fd` (EBADF otherwise): the hot
 * path's EventFd.signal, a plain Node-API function without the class
 * method's unwrapping. */
export const signalFd = binding.signalFdFunction();
export type EventFd = Binding.EventFd;
export type PidFile = Binding.PidFile;
export type SharedMemory = Binding.SharedMemory;
export type UnixListener = Binding.UnixListener;
export type UnixStream = Binding.UnixStream;
export type ShmOptions = Binding.ShmOptions;
export type Mailbox = Binding.Mailbox;
export type Ring = Binding.Ring;
export type FdLimit = Binding.FdLimit;
export type { MailboxGlobals, MailboxSlot, PathState, ReceivedMessage, RingLayoutInfo, RingLayoutOptions } from '../index.js';
