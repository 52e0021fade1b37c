// Gen-Z 1.1 numbers the codecs and their users name: OpClasses, OpCodes,
// StandaloneAck reasons and UnsolicitedEvent codes (genz-packets.md). Plain
// frozen objects, so `OpClass.Control === 0x01` reads like the spec.

export const OpClass = Object.freeze({
  Core64: 0x00,
  Control: 0x01,
  Atomic1: 0x02,
  LDM1: 0x03,
  Adv1: 0x04,
  Adv2: 0x05,
  DR: 0x14,
  CtxId: 0x15,
  Multicast: 0x16,
  SOD: 0x17,
} as const);

/** Names of the OpClasses the spec defines, vendor-defined 0x18-0x1f included. */
export function opClassName(ocl: number): string | undefined {
  for (const [name, value] of Object.entries(OpClass)) if (value === ocl) return name;
  if (ocl >= 0x18 && ocl <= 0x1f) return `Vendor${(ocl - 0x18).toString()}`;
  return undefined;
}

export const ControlOpCode = Object.freeze({
  StandaloneAck: 0x00,
  ReadResponse: 0x01,
  Write: 0x04,
  Interrupt: 0x08,
  NoOp: 0x09,
  UnsolicitedEvent: 0x0a,
  CStatePowerCtl: 0x0b,
  RKeyUpdate: 0x0c,
  AEAD: 0x0d,
  WritePartial: 0x13,
  Read: 0x1b,
  UnrelWriteMSG: 0x1e,
  WriteMSG: 0x1f,
} as const);

export const Core64OpCode = Object.freeze({
  StandaloneAck: 0x00,
  ReadResponse: 0x01,
  Write: 0x04,
  WritePartial: 0x13,
  Read: 0x1b,
} as const);

/** Atomic1 OpCodes (the public genz-utils opcode tables). The packets'
 * layouts beyond the explicit header are not public: the ones famez speaks
 * (Add, Swap, CAS and AtomicResultsResponse) are its own (layouts.ts). */
export const Atomic1OpCode = Object.freeze({
  AtomicResponse: 0x00,
  AtomicResultsResponse: 0x01,
  Add: 0x04,
  Sum: 0x05,
  Swap: 0x06,
  CAS: 0x07,
} as const);

/** StandaloneAck Reason codes. */
export const Reason = Object.freeze({
  NoError: 0x00,
  UnexpectedPkt: 0x01,
  UnsupportedReq: 0x02,
  MalformedPkt: 0x03,
  InvAccKey: 0x06,
  InvAccPerm: 0x07,
  RNR0: 0x0a,
  RNR1: 0x0b,
} as const);

/** UnsolicitedEvent (UEP) Event codes. */
export const EventCode = Object.freeze({
  RecovProtocolErr: 0x00,
  IfaceErr: 0x03,
  FullIfaceReset: 0x07,
  WarmIfaceReset: 0x08,
  NewPeerComp: 0x09,
  UnableToCommunicate: 0x0a,
} as const);

/** The largest CID: Gen-Z CIDs are 12 bits. */
export const MAX_CID = 0xfff;
/** The largest fabric whose FAME-Z CIDs (ID x 100, the switch being peer
 * N+1) all fit in 12 bits: 39 peers, the switch CID 4000. Here rather than in
 * fabric/genz-codec.ts so that the server's option checks may name it. */
export const MAX_GENZ_PEERS = Math.floor(MAX_CID / 100) - 1;
