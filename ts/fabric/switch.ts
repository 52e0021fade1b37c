// The fabric switch and Primordial Fabric Manager as a pure state machine:
// fed connects, departures and mailbox messages, it returns the messages to
// send and the lines to log. The I/O layer (fabric.ts) moves the bytes.
// For a peer that speaks only FAME-Z's documented mailbox text, the
// exchange is FAME-Z's: ping -> pong, Peer-Attribute -> ACK, Link RFC ->
// CTL-Write, Standalone Acknowledgment -> follow-up Peer-Attribute.
import { asked } from '../link/directory.js';
import { GenZTextError, parse, peerAttributes, ttcMicroseconds, type TextMessage } from '../genz/text.js';

/** FAME-Z's fabric SID when the switch is the PFM. */
export const DEFAULT_SID = 27;

export interface SwitchConfig {
  /** Peers get IDs 1..nClients; the switch is nClients + 1. */
  nClients: number;
  /** Act as the Primordial Fabric Manager (answer Link RFC, ask newcomers). */
  pfm: boolean;
  sid: number;
  /** How the switch reads a slot (default: FAME-Z text, `parse`). Throws on
   * bytes that are no message; the switch NAKs and logs them. */
  decode?: (bytes: Uint8Array, from: number) => TextMessage;
}

export interface PortRecord {
  id: number;
  nodename: string;
  cclass: string;
  SID0: number | null;
  CID0: number | null;
  /** 'configured' once the peer acknowledged the switch's CTL-Write. */
  link: 'up' | 'configuring' | 'configured';
}

export interface Outgoing {
  to: number;
  message: TextMessage;
  /** Not to be lost to a peer slow to read (see Delivery's `keep`): the
   * switch's own Peer-Attribute question, which it asks once per join and
   * once per configuration and never again. */
  keep?: boolean;
}

export interface Reaction {
  send: Outgoing[];
  log: string[];
  /** The kind of message handled (receive), when it was one. */
  received?: TextMessage['kind'];
  /** Why a message was rejected as malformed (receive). */
  rejected?: string;
  /** A Link RFC the switch holds until a fabric manager is in charge: the
   * I/O layer calls `release(peer)` after HOLD_RFC_MS. */
  held?: number;
}

/** How long a switch with links holds a Link RFC while no fabric manager is
 * in charge (one may be elected, or its link come back) before it NAKs:
 * longer than a secondary takes to take over. */
export const HOLD_RFC_MS = 3000;

const nothing = (): Reaction => ({ send: [], log: [] });

export class Switch {
  readonly serverId: number;
  /** With links to other switches: page N of their peers, for `famez-nodes? N`. */
  directory: ((page: number) => string) | null = null;
  /** With links to other switches: the fabric manager in charge (ts/link/manager.ts),
   * which this switch configures its peers for; null when there is none.
   * Without: the switch itself when it is the PFM. */
  manager: (() => { sid: number; cid: number } | null) | null = null;
  private readonly ports = new Map<number, PortRecord>();
  /** Outstanding CTL-Write tags, by tag: the peer they configure. */
  private readonly tags = new Map<number, { peer: number; SID: number; CID: number }>();
  private nextTag = 1;
  /** Peers whose Link RFC waits for a fabric manager to be in charge. */
  private readonly held = new Set<number>();

  constructor(readonly config: SwitchConfig) {
    this.serverId = config.nClients + 1;
  }

  get cid(): number {
    return this.serverId * 100;
  }

  /** The switch's own attributes, as it answers Peer-Attribute. */
  attributes(): Record<string, string> {
    return { 'C-Class': 'FabricSwitch', SID0: String(this.config.sid), CID0: String(this.cid) };
  }

  port(id: number): PortRecord | undefined {
    return this.ports.get(id);
  }

  get portList(): PortRecord[] {
    return [...this.ports.values()].sort((a, b) => a.id - b.id);
  }

  /** The fabric manager peers are configured for now, or null. */
  managerNow(): { sid: number; cid: number } | null {
    if (this.manager) return this.manager();
    return this.config.pfm ? { sid: this.config.sid, cid: this.cid } : null;
  }

  /** The fabric manager changed: every configured peer gets a CTL-Write
   * naming the new one (its own SID and CID unchanged), as a fabric
   * manager taking over writes each component's PFMSID/PFMCID. */
  reconfigure(): Reaction {
    const m = this.managerNow();
    const r = nothing();
    if (!m) return r;
    for (const id of this.held) {
      const port = this.ports.get(id);
      if (port) {
        r.send.push({ to: id, message: this.configure(id, port, m) });
        r.log.push(`peer ${id}: held Link RFC answered: the fabric manager is ${m.sid}:${m.cid}`);
      }
    }
    this.held.clear();
    const answered = r.send.length;
    for (const port of this.ports.values()) {
      if (port.link !== 'configured' || port.SID0 === null || port.CID0 === null) continue;
      r.send.push({ to: port.id, message: this.ctlWrite(port.id, m, port.SID0, port.CID0) });
    }
    const told = r.send.length - answered;
    if (told) r.log.push(`telling ${told} configured peer(s) the fabric manager is now ${m.sid}:${m.cid}`);
    return r;
  }

  connect(id: number): Reaction {
    this.ports.set(id, { id, nodename: '', cclass: 'Driverless QEMU', SID0: null, CID0: null, link: 'up' });
    if (!this.managerNow()) return nothing();
    return { send: [{ to: id, message: { kind: 'link-ctl-peer-attribute' }, keep: true }], log: [] };
  }

  /** The CTL-Write that configures peer `id` for manager `m` (SID, CID ID * 100). */
  private configure(id: number, port: PortRecord, m: { sid: number; cid: number }): TextMessage {
    port.link = 'configuring';
    return this.ctlWrite(id, m, this.config.sid, id * 100);
  }

  /** A CTL-Write of manager `m`, SID and CID for peer `id`, its tag remembered. */
  private ctlWrite(id: number, m: { sid: number; cid: number }, SID: number, CID: number): TextMessage {
    const tag = this.nextTag++;
    this.tags.set(tag, { peer: id, SID, CID });
    return { kind: 'ctl-write', Space: 0, PFMSID: m.sid, PFMCID: m.cid, SID, CID, Tag: tag };
  }

  /** A held Link RFC's time is up: NAKed if it still waits for a manager. */
  release(id: number): Reaction {
    if (!this.held.delete(id) || !this.ports.has(id)) return nothing();
    return {
      send: [{ to: id, message: { kind: 'link-ctl-nak', details: 'Reason=no fabric manager here' } }],
      log: [`peer ${id}: Link RFC NAKed: no fabric manager in charge after ${HOLD_RFC_MS} ms`],
    };
  }

  disconnect(id: number): void {
    this.held.delete(id);
    this.ports.delete(id);
    for (const [tag, t] of this.tags) if (t.peer === id) this.tags.delete(tag);
  }

  /** Handles a message peer `from` left in its slot for the switch. */
  receive(from: number, bytes: Uint8Array, nodename = ''): Reaction {
    const port = this.ports.get(from);
    if (!port) return { send: [], log: [`message from peer ${from}, which is not connected: ignored`] };
    if (nodename) port.nodename = nodename;
    let msg: TextMessage;
    try {
      msg = this.config.decode ? this.config.decode(bytes, from) : parse(bytes);
    } catch (e) {
      const why = e instanceof GenZTextError ? `${e.code}: ${e.message}` : String(e);
      return {
        send: [{ to: from, message: { kind: 'link-ctl-nak', details: `Reason=malformed (${why.replace(/[,\n]/g, ' ').slice(0, 200)})` } }],
        log: [`peer ${from}: malformed message rejected: ${why}`],
        rejected: why,
      };
    }
    return { ...this.handle(from, port, msg), received: msg.kind };
  }

  private handle(from: number, port: PortRecord, msg: TextMessage): Reaction {
    const reply = (message: TextMessage): Reaction => ({ send: [{ to: from, message }], log: [] });
    switch (msg.kind) {
      case 'ping':
        return reply({ kind: 'pong' });
      case 'pong':
        return { send: [], log: [`peer ${from}: pong`] };
      case 'dump':
        return { send: [], log: [this.picture()] };
      case 'link-ctl-peer-attribute':
        return reply({ kind: 'link-ctl-ack', attributes: this.attributes() });
      case 'link-ctl-ack': {
        const a = peerAttributes(msg);
        if (a.cclass !== undefined) port.cclass = a.cclass;
        if (a.SID0 !== undefined) port.SID0 = a.SID0;
        if (a.CID0 !== undefined) port.CID0 = a.CID0;
        return { send: [], log: [`peer ${from}: C-Class=${port.cclass},SID0=${port.SID0 ?? '?'},CID0=${port.CID0 ?? '?'}`] };
      }
      case 'link-ctl-nak':
        return { send: [], log: [`peer ${from}: NAK ${msg.details}`] };
      case 'link-rfc': {
        if (ttcMicroseconds(msg.TTC) === undefined) {
          return { send: [], log: [`peer ${from}: Link RFC with TTC=${msg.TTC} dropped: TTC must be in microseconds`] };
        }
        const m = this.managerNow();
        if (m) return reply(this.configure(from, port, m));
        // Without links nobody can come to manage the fabric; with them one
        // may (an election, a link back), so the request waits a while.
        if (!this.manager) return reply({ kind: 'link-ctl-nak', details: 'Reason=no fabric manager here' });
        if (this.held.has(from)) return nothing();
        this.held.add(from);
        return { send: [], log: [`peer ${from}: Link RFC held until a fabric manager is in charge`], held: from };
      }
      case 'standalone-ack': {
        const t = this.tags.get(msg.Tag);
        if (!t || t.peer !== from) {
          return { send: [], log: [`peer ${from}: Standalone Acknowledgment for unknown tag ${msg.Tag} ignored`] };
        }
        this.tags.delete(msg.Tag);
        if (msg.Reason !== 'OK') {
          port.link = 'up';
          return { send: [], log: [`peer ${from}: configuration refused (Reason=${msg.Reason})`] };
        }
        port.link = 'configured';
        port.SID0 = t.SID;
        port.CID0 = t.CID;
        return { send: [{ to: from, message: { kind: 'link-ctl-peer-attribute' }, keep: true }], log: [`peer ${from}: configured SID0=${t.SID},CID0=${t.CID}`] };
      }
      case 'ctl-write':
        return reply({ kind: 'standalone-ack', Tag: msg.Tag, Reason: 'UNSUPPORTED' });
      case 'text': {
        // famez's question for the peers of other switches (ts/link/directory.ts).
        const page = this.directory ? asked(msg.text) : null;
        if (page !== null) return reply({ kind: 'text', text: this.directory!(page) });
        return reply({ kind: 'link-ctl-nak', details: `Reason=unknown command` });
      }
    }
  }

  /** An ASCII picture of the switch: each port's C-Class, nodename, CID and SID. */
  picture(): string {
    const rows = [`  Z-switch (ID ${this.serverId}, C-Class FabricSwitch, SID ${this.config.sid}, CID ${this.cid})`, '  +------+'];
    for (let id = 1; id <= this.config.nClients; id++) {
      const p = this.ports.get(id);
      const desc = p ? `${p.cclass} ${p.nodename || '(no name)'} [CID ${p.CID0 ?? '-'}, SID ${p.SID0 ?? '-'}] ${p.link}` : '';
      rows.push(`  |${String(id).padStart(4)}  |-- ${desc}`);
    }
    rows.push('  +------+');
    return rows.join('\n');
  }
}
