// famez's Gen-Z codecs, pure and I/O free: the FAME-Z text control language
// (`text.parse`, `text.format`) and binary explicit packets (`encode`,
// `decode`). Made to be imported whole: `import * as genz from './genz/index.js'`.
export * as text from './text.js';
export {
  GenZTextError,
  type GenZTextErrorCode,
  type TextMessage,
  type TextKind,
  type Ping,
  type Pong,
  type Dump,
  type PeerAttributeRequest,
  type LinkCtlAck,
  type LinkCtlNak,
  type LinkRfc,
  type CtlWrite,
  type StandaloneAcknowledgment,
  type Text,
} from './text.js';
export {
  encode,
  decode,
  isRequest,
  gcid,
  MAX_LEN,
  GenZPacketError,
  type GenZPacketErrorCode,
  type Packet,
  type PacketClass,
  type PacketInput,
  type PacketOf,
  type ExplicitHeader,
  type Core64Read,
  type Core64Write,
  type Core64ReadResponse,
  type Core64StandaloneAck,
  type ControlRead,
  type ControlWrite,
  type ControlReadResponse,
  type ControlStandaloneAck,
  type ControlUnsolicitedEvent,
  type Atomic1Add,
  type Atomic1Swap,
  type Atomic1CAS,
  type Atomic1AtomicResultsResponse,
} from './packets.js';
export { pcrc, ecrc } from './crc.js';
export { OpClass, ControlOpCode, Core64OpCode, Atomic1OpCode, Reason, EventCode, opClassName } from './codes.js';
