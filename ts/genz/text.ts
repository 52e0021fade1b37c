// The FAME-Z control language: the ASCII messages peers leave in the mailbox
// ("ping", "Link RFC TTC=27us", "CTL-Write Space=0,..."). `parse` turns one
// message into a typed object, `format` turns it back; format(m) always
// parses back to m. Malformed input is a GenZTextError, never anything else.
//
// Numbers (SID, CID, Tag, tracker...) are JS numbers, written in decimal as
// FAME-Z prints them (%d). They are checked to be non-negative safe integers,
// not against Gen-Z field widths: FAME-Z's CID = peer ID x 100 exceeds the
// 12-bit CID from peer 41 on, and its tags count up without wrapping.

import { FamezError } from '../errors.js';

export type GenZTextErrorCode =
  /** Bytes that are not UTF-8, or control characters other than tab/CR/LF. */
  | 'ENOTTEXT'
  /** Nothing but whitespace (and perhaps a tracker). */
  | 'EEMPTY'
  /** A `!FZT=` not followed by a decimal number up to the end. */
  | 'ETRACKER'
  /** A known command with the wrong words after it ("ping now", "Link CTL"). */
  | 'EARGS'
  /** A key=value list with an element lacking '=', an empty, duplicate or
   * unknown key. */
  | 'EKV'
  /** A required key absent or empty. */
  | 'EMISSING'
  /** A value that must be a decimal number is not one. */
  | 'ENUMBER'
  /** format: a message whose values cannot be written so they parse back. */
  | 'EVALUE'
  /** Not a string or Uint8Array (parse), not a known message (format). */
  | 'EINPUT';

export class GenZTextError extends FamezError<GenZTextErrorCode> {
  override name = 'GenZTextError';
}

interface Tracked {
  /** The `!FZT=<n>` tracker suffix, when present. */
  tracker?: number;
}

export interface Ping extends Tracked {
  kind: 'ping';
}
export interface Pong extends Tracked {
  kind: 'pong';
}
/** FAME-Z's `dump`: asks the receiver to print its state. */
export interface Dump extends Tracked {
  kind: 'dump';
}
/** `Link CTL Peer-Attribute`: asks for C-Class, SID0 and CID0. */
export interface PeerAttributeRequest extends Tracked {
  kind: 'link-ctl-peer-attribute';
}
/** `Link CTL ACK k=v,...`: in answer to Peer-Attribute, the sender's
 * attributes (C-Class, SID0, CID0 and whatever else it sends), in order. */
export interface LinkCtlAck extends Tracked {
  kind: 'link-ctl-ack';
  attributes: Record<string, string>;
}
/** `Link CTL NAK <details>`: a refusal; details are free text, maybe empty. */
export interface LinkCtlNak extends Tracked {
  kind: 'link-ctl-nak';
  details: string;
}
/** `Link RFC TTC=<time>`: asks the fabric manager to configure the sender.
 * TTC is kept as written; see ttcMicroseconds. */
export interface LinkRfc extends Tracked {
  kind: 'link-rfc';
  TTC: string;
}
/** `CTL-Write Space=0,PFMSID=..,PFMCID=..,SID=..,CID=..,Tag=..`. */
export interface CtlWrite extends Tracked {
  kind: 'ctl-write';
  Space: number;
  PFMSID: number;
  PFMCID: number;
  SID: number;
  CID: number;
  Tag: number;
}
/** `Standalone Acknowledgment Tag=<t>,Reason=<r>`. */
export interface StandaloneAcknowledgment extends Tracked {
  kind: 'standalone-ack';
  Tag: number;
  Reason: string;
}
/** Anything that starts with no known command, kept verbatim. */
export interface Text extends Tracked {
  kind: 'text';
  text: string;
}

export type TextMessage =
  | Ping
  | Pong
  | Dump
  | PeerAttributeRequest
  | LinkCtlAck
  | LinkCtlNak
  | LinkRfc
  | CtlWrite
  | StandaloneAcknowledgment
  | Text;

export type TextKind = TextMessage['kind'];

/** FAME-Z's tracker token, appended to any message. */
export const TRACKER_TOKEN = '!FZT=';

type Untracked<M> = M extends TextMessage ? Omit<M, 'tracker'> : never;
type Body = Untracked<Exclude<TextMessage, Text>>;

interface Command {
  words: readonly string[];
  /** `rest`: the text after the command words, trimmed; '' when none. */
  parse(rest: string): Body;
}

const CTL_WRITE_KEYS = ['Space', 'PFMSID', 'PFMCID', 'SID', 'CID', 'Tag'] as const;

/** Every command FAME-Z dispatches on, as words. The longest matching prefix
 * wins, as in FAME-Z ("Link CTL Peer-Attribute" is Link CTL's argument). */
const COMMANDS: readonly Command[] = [
  { words: ['ping'], parse: (rest) => noArgs('ping', rest) },
  { words: ['pong'], parse: (rest) => noArgs('pong', rest) },
  { words: ['dump'], parse: (rest) => noArgs('dump', rest) },
  {
    words: ['Link', 'CTL'],
    parse: (rest) => {
      throw new GenZTextError('EARGS', `Link CTL needs Peer-Attribute, ACK or NAK${rest ? `, not "${rest}"` : ''}`);
    },
  },
  { words: ['Link', 'CTL', 'Peer-Attribute'], parse: (rest) => noArgs('link-ctl-peer-attribute', rest, 'Link CTL Peer-Attribute') },
  {
    words: ['Link', 'CTL', 'ACK'],
    parse: (rest) => {
      if (!rest) throw new GenZTextError('EARGS', 'Link CTL ACK needs key=value attributes (C-Class=...,SID0=...,CID0=...)');
      return { kind: 'link-ctl-ack', attributes: Object.fromEntries(keyValues(rest, 'Link CTL ACK')) };
    },
  },
  { words: ['Link', 'CTL', 'NAK'], parse: (rest) => ({ kind: 'link-ctl-nak', details: rest }) },
  {
    words: ['Link', 'RFC'],
    parse: (rest) => {
      const kv = knownKeys(rest, 'Link RFC', ['TTC']);
      return { kind: 'link-rfc', TTC: required(kv, 'TTC', 'Link RFC') };
    },
  },
  {
    words: ['CTL-Write'],
    parse: (rest) => {
      const kv = knownKeys(rest, 'CTL-Write', CTL_WRITE_KEYS);
      const n = (key: (typeof CTL_WRITE_KEYS)[number]) => decimal(required(kv, key, 'CTL-Write'), `CTL-Write ${key}`);
      return { kind: 'ctl-write', Space: n('Space'), PFMSID: n('PFMSID'), PFMCID: n('PFMCID'), SID: n('SID'), CID: n('CID'), Tag: n('Tag') };
    },
  },
  {
    words: ['Standalone', 'Acknowledgment'],
    parse: (rest) => {
      const kv = knownKeys(rest, 'Standalone Acknowledgment', ['Tag', 'Reason']);
      return {
        kind: 'standalone-ack',
        Tag: decimal(required(kv, 'Tag', 'Standalone Acknowledgment'), 'Standalone Acknowledgment Tag'),
        Reason: required(kv, 'Reason', 'Standalone Acknowledgment'),
      };
    },
  },
];

/** Longest first, so the first match is the longest known prefix. */
const BY_LENGTH = [...COMMANDS].sort((a, b) => b.words.length - a.words.length);
/** The first words of the commands, and how to find a payload's. */
const COMMAND_STARTS = new Set(COMMANDS.map((c) => c.words[0]));
const FIRST_WORD = /\S+/;

function noArgs<K extends 'ping' | 'pong' | 'dump' | 'link-ctl-peer-attribute'>(kind: K, rest: string, name: string = kind): { kind: K } {
  if (rest) throw new GenZTextError('EARGS', `${name} takes no arguments, not "${rest}"`);
  return { kind };
}

/** A comma-separated key=value list, in order; keys and values trimmed, the
 * value is everything after the first '='. */
function keyValues(list: string, where: string): [string, string][] {
  const out: [string, string][] = [];
  const seen = new Set<string>();
  for (const element of list.split(',')) {
    const eq = element.indexOf('=');
    const key = (eq < 0 ? element : element.slice(0, eq)).trim();
    if (eq < 0 || !key) throw new GenZTextError('EKV', `${where}: "${element.trim()}" is not key=value`);
    if (/\s/.test(key)) throw new GenZTextError('EKV', `${where}: key "${key}" has whitespace in it`);
    if (seen.has(key)) throw new GenZTextError('EKV', `${where}: ${key} given twice`);
    seen.add(key);
    out.push([key, element.slice(eq + 1).trim()]);
  }
  return out;
}

function knownKeys(list: string, where: string, keys: readonly string[]): Map<string, string> {
  const kv = new Map(list ? keyValues(list, where) : []);
  for (const key of kv.keys()) {
    if (!keys.includes(key)) throw new GenZTextError('EKV', `${where}: unknown key ${key} (expected ${keys.join(', ')})`);
  }
  return kv;
}

function required(kv: Map<string, string>, key: string, where: string): string {
  const value = kv.get(key);
  if (!value) throw new GenZTextError('EMISSING', `${where} needs ${key}=<value>`);
  return value;
}

function decimal(value: string, what: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new GenZTextError('ENUMBER', `${what} must be a decimal number, not "${value}"`);
  }
  return n;
}

// C0 controls but tab, LF, CR; DEL; and lone UTF-16 surrogates.
// eslint-disable-next-line no-control-regex -- matching control characters is its purpose
const NOT_TEXT = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Printable ASCII, tab, LF and CR: what almost every message is made of.
 * The bytes [start, end) as text when they are only that (one pass, no
 * decoder, no regex), else null for the full check. */
function asciiText(input: Uint8Array, end: number): string | null {
  for (let i = 0; i < end; i++) {
    const b = input[i];
    if (b >= 0x7f || (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d)) return null;
  }
  return LATIN1.call(input, 0, end);
}
// Buffer's latin1Slice takes any Uint8Array: no Buffer view per message.
const LATIN1 = Buffer.prototype.latin1Slice as (this: Uint8Array, start: number, end: number) => string;

/** The payload's first word (what /\S+/ finds), without a regex for the
 * ASCII whitespace every FAME-Z message uses; null when it has none. */
function firstWord(payload: string): string | null {
  const n = payload.length;
  let i = 0;
  while (i < n && isSpace(payload.charCodeAt(i))) i++;
  if (i === n) return null;
  let j = i;
  while (j < n && !isSpace(payload.charCodeAt(j))) j++;
  // Other Unicode whitespace: the regex decides.
  for (let k = i; k < j; k++) if (payload.charCodeAt(k) > 0x7f) return FIRST_WORD.exec(payload)?.[0] ?? null;
  return payload.slice(i, j);
}

function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

function toText(input: string | Uint8Array): string {
  let text: string;
  if (typeof input === 'string') {
    text = input;
  } else if (input instanceof Uint8Array) {
    // A C string: the NUL terminator and anything that pads it may follow.
    let end = input.length;
    while (end > 0 && input[end - 1] === 0) end--;
    const ascii = asciiText(input, end);
    if (ascii !== null) return ascii;
    try {
      text = UTF8.decode(input.subarray(0, end));
    } catch {
      throw new GenZTextError('ENOTTEXT', 'message bytes are not UTF-8 text');
    }
  } else {
    throw new GenZTextError('EINPUT', 'parse takes a string or a Uint8Array');
  }
  const bad = NOT_TEXT.exec(text);
  if (bad) {
    const code = bad[0].charCodeAt(0).toString(16).padStart(4, '0');
    throw new GenZTextError('ENOTTEXT', `message has a character that is not text (U+${code}) at ${bad.index.toString()}`);
  }
  return text;
}

interface Words {
  words: string[];
  /** Index in the payload where each word starts. */
  starts: number[];
}

const WORD = /\S+/g;

/** The first `max` words (a command has at most 3: 4 tell whether
 * anything follows the longest). */
function wordsOf(payload: string, max = 4): Words {
  const words: string[] = [];
  const starts: number[] = [];
  WORD.lastIndex = 0;
  for (let m = WORD.exec(payload); m !== null && words.length < max; m = WORD.exec(payload)) {
    words.push(m[0]);
    starts.push(m.index);
  }
  return { words, starts };
}

function matchCommand(words: readonly string[]): Command | undefined {
  return BY_LENGTH.find((c) => c.words.length <= words.length && c.words.every((w, i) => words[i] === w));
}

/** Parse one message: a string, or the bytes of a mailbox buffer (UTF-8,
 * trailing NULs ignored). Throws GenZTextError and nothing else. */
export function parse(input: string | Uint8Array): TextMessage {
  const text = toText(input);
  let payload = text;
  let tracker: number | undefined;
  const at = text.indexOf(TRACKER_TOKEN);
  if (at >= 0) {
    const digits = text.slice(at + TRACKER_TOKEN.length);
    tracker = Number(digits);
    if (!/^[0-9]+$/.test(digits) || !Number.isSafeInteger(tracker)) {
      throw new GenZTextError('ETRACKER', `the tracker must end the message as ${TRACKER_TOKEN}<decimal number>, not "${text.slice(at)}"`);
    }
    payload = text.slice(0, at);
  }
  // Most traffic is no command: when the first word starts no command, the
  // words need not be split out.
  const first = firstWord(payload);
  if (first === null) throw new GenZTextError('EEMPTY', 'empty message');
  if (!COMMAND_STARTS.has(first)) return tracker === undefined ? { kind: 'text', text: payload } : { kind: 'text', text: payload, tracker };
  const { words, starts } = wordsOf(payload);

  const command = matchCommand(words);
  const body: TextMessage = command
    ? command.parse(words.length > command.words.length ? payload.slice(starts[command.words.length]).trimEnd() : '')
    : { kind: 'text', text: payload };
  return tracker === undefined ? body : { ...body, tracker };
}

function checkValue(value: unknown, what: string, allowEmpty: boolean): string {
  if (typeof value !== 'string') throw new GenZTextError('EVALUE', `${what} must be a string`);
  if (!allowEmpty && !value) throw new GenZTextError('EVALUE', `${what} must not be empty`);
  if (value !== value.trim()) throw new GenZTextError('EVALUE', `${what} must not start or end with whitespace`);
  if (NOT_TEXT.test(value)) throw new GenZTextError('EVALUE', `${what} has characters that are not text`);
  if (value.includes(TRACKER_TOKEN)) throw new GenZTextError('EVALUE', `${what} must not contain ${TRACKER_TOKEN}`);
  return value;
}

function checkKeyValue(key: string, value: unknown, where: string): string {
  if (!key || /[\s,=]/.test(key) || NOT_TEXT.test(key)) {
    throw new GenZTextError('EVALUE', `${where}: key "${key}" must be non-empty text without whitespace, ',' or '='`);
  }
  const v = checkValue(value, `${where} ${key}`, true);
  if (v.includes(',')) throw new GenZTextError('EVALUE', `${where} ${key}: value must not contain ','`);
  return `${key}=${v}`;
}

function checkNumber(value: unknown, what: string): string {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new GenZTextError('EVALUE', `${what} must be a non-negative integer, not ${String(value)}`);
  }
  return value.toString();
}

function formatBody(m: TextMessage): string {
  switch (m.kind) {
    case 'ping':
    case 'pong':
    case 'dump':
      return m.kind;
    case 'link-ctl-peer-attribute':
      return 'Link CTL Peer-Attribute';
    case 'link-ctl-ack': {
      if (typeof m.attributes !== 'object' || m.attributes === null) throw new GenZTextError('EVALUE', 'Link CTL ACK attributes must be an object');
      const entries = Object.entries(m.attributes);
      if (entries.length === 0) throw new GenZTextError('EVALUE', 'Link CTL ACK needs at least one attribute');
      return `Link CTL ACK ${entries.map(([k, v]) => checkKeyValue(k, v, 'Link CTL ACK')).join(',')}`;
    }
    case 'link-ctl-nak': {
      const details = checkValue(m.details, 'Link CTL NAK details', true);
      return details ? `Link CTL NAK ${details}` : 'Link CTL NAK';
    }
    case 'link-rfc':
      return `Link RFC ${checkKeyValue('TTC', checkValue(m.TTC, 'Link RFC TTC', false), 'Link RFC')}`;
    case 'ctl-write':
      return `CTL-Write ${CTL_WRITE_KEYS.map((key) => `${key}=${checkNumber(m[key], `CTL-Write ${key}`)}`).join(',')}`;
    case 'standalone-ack': {
      const reason = checkKeyValue('Reason', checkValue(m.Reason, 'Standalone Acknowledgment Reason', false), 'Standalone Acknowledgment');
      return `Standalone Acknowledgment Tag=${checkNumber(m.Tag, 'Standalone Acknowledgment Tag')},${reason}`;
    }
    case 'text': {
      const text = m.text;
      if (typeof text !== 'string') throw new GenZTextError('EVALUE', 'text must be a string');
      if (NOT_TEXT.test(text)) throw new GenZTextError('EVALUE', 'text has characters that are not text');
      if (text.includes(TRACKER_TOKEN)) throw new GenZTextError('EVALUE', `text must not contain ${TRACKER_TOKEN}`);
      const { words } = wordsOf(text);
      if (words.length === 0) throw new GenZTextError('EVALUE', 'text must not be empty');
      const command = matchCommand(words);
      if (command) throw new GenZTextError('EVALUE', `text starting with "${command.words.join(' ')}" would parse as that command`);
      return text;
    }
    default:
      throw new GenZTextError('EINPUT', `unknown message kind ${JSON.stringify((m as { kind?: unknown }).kind)}`);
  }
}

/** The canonical text of a message, tracker last. Throws GenZTextError when
 * a value could not be parsed back (a ',' in a value, a control character). */
export function format(message: TextMessage): string {
  if (typeof message !== 'object' || message === null) throw new GenZTextError('EINPUT', 'format takes a message object');
  const body = formatBody(message);
  return message.tracker === undefined ? body : `${body}${TRACKER_TOKEN}${checkNumber(message.tracker, 'tracker')}`;
}

/** format, as UTF-8 bytes for a mailbox (no NUL terminator). */
export function toBytes(message: TextMessage): Uint8Array {
  return new TextEncoder().encode(format(message));
}

/** The TTC of a Link RFC in microseconds, or undefined when it is not written
 * in microseconds ("27us", "27 usec", "27µs"): FAME-Z's switch drops such an
 * RFC, its cycle being far longer than a millisecond. */
export function ttcMicroseconds(TTC: string): number | undefined {
  const m = /^([0-9]+)\s*(?:us|usec|\u00b5s|\u03bcs)$/i.exec(TTC.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The attributes FAME-Z records from a Link CTL ACK. Numbers must be decimal
 * (ENUMBER otherwise); absent ones are undefined. */
export function peerAttributes(ack: LinkCtlAck): { cclass: string | undefined; SID0: number | undefined; CID0: number | undefined } {
  const a = ack.attributes;
  const n = (key: string) => (a[key] === undefined ? undefined : decimal(a[key], `Link CTL ACK ${key}`));
  return { cclass: a['C-Class'], SID0: n('SID0'), CID0: n('CID0') };
}
