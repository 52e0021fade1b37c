// The shapes of the packets the codec speaks: one interface per class, field
// names exactly as genz-packets.md spells them, so a decoded packet reads like
// the spec's tables. Types only.
import type { PacketClass } from './layouts.js';

/** The explicit header every packet has. DSID/SSID are present exactly when
 * GC = 1, NextHdr0..3 exactly when NH = 1. */
export interface ExplicitHeader {
  DCID: number;
  LEN: number;
  VC: number;
  OpCode: number;
  PCRC: number;
  OCL: number;
  Tag: number;
  SCID: number;
  AKey: number;
  Deadline: number;
  ECN: number;
  GC: number;
  NH: number;
  PM: number;
  DSID?: number;
  SSID?: number;
  NextHdr0?: number;
  NextHdr1?: number;
  NextHdr2?: number;
  NextHdr3?: number;
  ECRC: number;
}

export interface Core64Read extends ExplicitHeader {
  class: 'Core64.Read';
  LP: number;
  TA: number;
  RK: number;
  RDSize: number;
  /** Present exactly when RK = 1. */
  RKey?: number;
  Addr: bigint;
  R0: number;
  PD: number;
  FPS: number;
}

export interface Core64Write extends ExplicitHeader {
  class: 'Core64.Write';
  LP: number;
  TA: number;
  RK: number;
  TC: number;
  NS: number;
  UN: number;
  PU: number;
  RC: number;
  MS: number;
  PadCNT: number;
  RKey?: number;
  Addr: bigint;
  payload: Uint8Array;
  R0: number;
  PD: number;
  FPS: number;
}

interface ReadResponseFields extends ExplicitHeader {
  LP: number;
  R0: number;
  PadCNT: number;
  MS: number;
  RRSPReason: number;
  payload: Uint8Array;
  R1: number;
}
export interface Core64ReadResponse extends ReadResponseFields {
  class: 'Core64.ReadResponse';
}
export interface ControlReadResponse extends ReadResponseFields {
  class: 'Control.ReadResponse';
}

interface StandaloneAckFields extends ExplicitHeader {
  RNR_QD: number;
  /** 11 bits: RS[2:0] in dword 2, RS[10:3] in the last dword. */
  RS: number;
  Reason: number;
}
export interface Core64StandaloneAck extends StandaloneAckFields {
  class: 'Core64.StandaloneAck';
}
export interface ControlStandaloneAck extends StandaloneAckFields {
  class: 'Control.StandaloneAck';
}

export interface ControlRead extends ExplicitHeader {
  class: 'Control.Read';
  R0: number;
  RK: number;
  DR: number;
  RDSize: number;
  RKey?: number;
  DRIface: number;
  /** 52 bits. */
  Addr: bigint;
  /** Canonical lowercase form on decode; any case accepted by encode. */
  MGRUUID: string;
  R1: number;
  FPS: number;
}

export interface ControlWrite extends ExplicitHeader {
  class: 'Control.Write';
  R0: number;
  RK: number;
  DR: number;
  R1: number;
  RKey?: number;
  DRIface: number;
  Addr: bigint;
  payload: Uint8Array;
  MGRUUID: string;
  PadCNT: number;
  R2: number;
  FPS: number;
}

export interface ControlUnsolicitedEvent extends ExplicitHeader {
  class: 'Control.UnsolicitedEvent';
  CV: number;
  SV: number;
  IV: number;
  Event: number;
  R1: number;
  RCCID: number;
  IfaceID: number;
  RCSID: number;
  R2: number;
  EventID: number;
  ES: number;
  R3: number;
}

/** famez's own Atomic1 request layout (layouts.ts): 64-bit operands as
 * their low and high 32 bits. */
interface Atomic1RequestFields extends ExplicitHeader {
  LP: number;
  TA: number;
  RK: number;
  /** Bytes the operation works on (famez serves 4 and 8). */
  Size: number;
  R0: number;
  RKey?: number;
  Addr: bigint;
  R1: number;
}
export interface Atomic1Add extends Atomic1RequestFields {
  class: 'Atomic1.Add';
  AddendLo: number;
  AddendHi: number;
}
export interface Atomic1Swap extends Atomic1RequestFields {
  class: 'Atomic1.Swap';
  SwapLo: number;
  SwapHi: number;
}
export interface Atomic1CAS extends Atomic1RequestFields {
  class: 'Atomic1.CAS';
  CompareLo: number;
  CompareHi: number;
  SwapLo: number;
  SwapHi: number;
}
/** The old value at the address, as famez lays it out. */
export interface Atomic1AtomicResultsResponse extends ExplicitHeader {
  class: 'Atomic1.AtomicResultsResponse';
  Size: number;
  R0: number;
  ResultLo: number;
  ResultHi: number;
  R1: number;
}

export type Packet =
  | Core64Read
  | Core64Write
  | Core64ReadResponse
  | Core64StandaloneAck
  | ControlRead
  | ControlWrite
  | ControlReadResponse
  | ControlStandaloneAck
  | ControlUnsolicitedEvent
  | Atomic1Add
  | Atomic1Swap
  | Atomic1CAS
  | Atomic1AtomicResultsResponse;

export type PacketOf<C extends PacketClass> = Extract<Packet, { class: C }>;

/** What encode takes: the class and any of its fields. Omitted numbers are 0,
 * Addr 0n, MGRUUID the nil UUID, payload empty; LEN, OpCode, OCL, PadCNT,
 * PCRC and ECRC are computed, and must agree with the computed values when
 * given. GC, RK and NH default to 1 when a field they enable is given. */
export type PacketInput = {
  [C in PacketClass]: { class: C } & Partial<Omit<PacketOf<C>, 'class'>>;
}[PacketClass];
