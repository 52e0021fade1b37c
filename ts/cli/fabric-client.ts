// `famez client` against a fabric server: FAME-Z's client commands on a
// FabricClient. runClient (client.ts) connects as before and hands the
// connection here when the shared memory holds a FAME-Z mailbox; against a
// --silent (stock) server, or a mailbox whose globals are damaged, it says
// why in one line and keeps the stock commands.
import type { PeerTransport } from '../transport.js';
import { FabricClient, FabricClientError, type AtomicOp, type FabricMessage } from '../fabric/client.js';
import { formatGcid, isNamedAfar, parseGcid } from '../fabric/remote.js';

export const FABRIC_COMMANDS = `commands:
  help                 this list
  who [--json]         the peers: ID and nodename, then the peers of other
                       switches (SID:CID) (--json: one JSON line)
  ping DEST            send ping and wait for the pong (up to 5 s)
  send DEST TEXT       send TEXT
  int DEST SRC TEXT    send TEXT as peer SRC (written into SRC's slot, DEST's vector SRC rung)
  link WORDS...        send 'Link WORDS...' to the switch
  rfc                  send 'Link RFC TTC=27us' to the switch (asks to be configured)
  read OWNER OFFSET LENGTH  read fabric-attached memory (OWNER: a switch's SID:CID, or switch)
  write OWNER OFFSET TEXT   write TEXT there
  atomic OWNER OFFSET add N | swap N | cas EXPECT NEW [--size 4] [--key K]
                       an atomic on the 8-byte (or 4-byte) word there, done by
                       the owner (K: its R-Key); prints the old value
                       (N: decimal, -N, or 0x hex)
  dump [--json]        own ID, nodename, SID0/CID0, link state; peers and their attributes
  quit                 leave
DEST: an ID, a nodename, server or switch, all (every other peer), others (every other peer but the switch);
  a peer of another switch: SID:CID or nodename@SID (ping and send)`;

/** How long `ping` waits for its pongs. */
const PING_WAIT_MS = 5000;

export interface FabricSessionOptions {
  nodename?: string;
  verbose?: boolean;
  say: (line: string) => void;
  /** Whether the caller goes on as a plain ivshmem peer when the server is
   * no fabric (the host client; a guest cannot). Default true. */
  plainFallback?: boolean;
}

export class FabricSession {
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly fabric: FabricClient,
    private readonly say: (line: string) => void,
    verbose: boolean,
  ) {
    fabric.on('message', (m) => {
      // The switch's answers to `who`'s question are who's to show.
      if (m.from === fabric.serverId && m.text.startsWith('famez-nodes ')) return;
      say(`from ${m.gcid === undefined ? this.who(m.from) : formatGcid(m.gcid)}: ${this.show(m)}`);
    });
    fabric.on('configured', ({ SID0, CID0, from }) => say(`configured by ${this.who(from)}: SID0=${SID0},CID0=${CID0}`));
    fabric.on('data', ({ from, messages, gcid }) => say(`ring from ${gcid === undefined ? this.who(from) : formatGcid(gcid)}: ${messages.length} message(s)`));
    fabric.on('join', ({ id }) => say(`peer ${id} joined`));
    fabric.on('leave', ({ id }) => say(`peer ${id} left`));
    fabric.on('warning', (w) => say(`warning: ${w}`));
    if (verbose) fabric.on('sent', ({ to, text }) => say(`to ${this.who(to)}: ${text}`));
  }

  /** A fabric session over `transport` (the host Client, a guest's
   * device), or null when its server is no fabric (said in one line, with
   * the globals found: a host client then runs as a plain ivshmem peer). */
  static attach(transport: PeerTransport, options: FabricSessionOptions): FabricSession | null {
    try {
      const fabric = FabricClient.attach(transport, { nodename: options.nodename });
      return new FabricSession(fabric, options.say, options.verbose ?? false);
    } catch (e) {
      if (!(e instanceof FabricClientError && e.code === 'ENOTFABRIC')) throw e;
      options.say(`not a FAME-Z fabric: ${e.message}${options.plainFallback === false ? '' : '; running as a plain ivshmem peer (stock commands)'}`);
      return null;
    }
  }

  /** The greeting after the connection line. */
  describe(): string {
    const f = this.fabric;
    const rings = f.rings ? `; ring channels of ${f.rings.capacity} bytes` : '; no ring channels (slot 0 describes none)';
    return `fabric of ${f.nClients} peers: this is peer ${f.id} '${f.nodename}', the switch is peer ${f.serverId}${rings}`;
  }

  /** Runs one command line after the ones before it; false on quit. */
  command(line: string): Promise<boolean> {
    const run = this.chain.then(() => this.execute(line));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Runs `task` (link-up at start, say) after the commands before it. */
  run(task: () => Promise<void>): Promise<void> {
    const r = this.chain.then(task);
    this.chain = r.catch(() => undefined);
    return r;
  }

  /** Resolves once every command given so far has run. */
  idle(): Promise<void> {
    return this.chain.then(() => undefined);
  }

  private who(id: number): string {
    const name = this.fabric.nodenameOf(id);
    return `${id} (${name || '?'})`;
  }

  private show(m: FabricMessage): string {
    if (m.message || /^[\t\x20-\x7e\u00a0-\uffff]*$/.test(m.text)) return m.text;
    return `${m.bytes.length} byte(s) that are not FAME-Z text: ${m.bytes.subarray(0, 32).toString('hex')}${m.bytes.length > 32 ? '...' : ''}`;
  }

  private async execute(line: string): Promise<boolean> {
    const trimmed = line.trim();
    if (!trimmed) return true;
    const [cmd, ...args] = trimmed.split(/\s+/);
    /** The text after the first `n` words of the line, as typed. */
    const rest = (n: number) => trimmed.replace(new RegExp(`^(?:\\S+\\s+){${n}}`), '').trim();
    const f = this.fabric;
    try {
      switch (cmd.toLowerCase()) {
        case 'help':
        case 'h':
        case '?':
          this.say(FABRIC_COMMANDS);
          return true;
        case 'quit':
        case 'q':
        case 'exit':
          return false;
        case 'who':
          if (!this.jsonFlag('who', args)) return true;
          if (args.length === 1) {
            this.say(JSON.stringify({ ...this.whoJson(), remote: await this.remote() }));
            return true;
          }
          this.say(`${f.id} ${f.nodename} (me)`);
          for (const p of f.peers) this.say(`${p.id} ${p.nodename || '(no name)'}${p.isSwitch ? ' (switch)' : ''}`);
          for (const r of await this.remote()) this.say(`${r.gcid} ${r.nodename || '(no name)'} (${r.cclass}, SID ${r.sid}, ${r.hops} hop${r.hops === 1 ? '' : 's'})`);
          return true;
        case 'ping':
          if (args.length !== 1) {
            this.say('usage: ping DEST');
            return true;
          }
          await this.ping(args[0]);
          return true;
        case 'send':
          if (args.length < 2) {
            this.say('usage: send DEST TEXT');
            return true;
          }
          await this.send(args[0], rest(2));
          return true;
        case 'int': {
          if (args.length < 3 || !/^\d+$/.test(args[1])) {
            this.say('usage: int DEST SRC TEXT');
            return true;
          }
          const src = Number(args[1]);
          const text = rest(3);
          const ids = f.resolve(args[0]);
          await f.spoof(args[0], src, text);
          this.say(`sent to ${ids.map((id) => this.who(id)).join(', ')} as ${this.who(src)}: ${text}`);
          return true;
        }
        case 'link':
          if (args.length === 0) {
            this.say('usage: link WORDS... (e.g. link CTL Peer-Attribute)');
            return true;
          }
          await this.send('switch', `Link ${rest(1)}`);
          return true;
        case 'rfc':
          await this.send('switch', 'Link RFC TTC=27us');
          return true;
        case 'read': {
          if (args.length !== 3 || !/^\d+$/.test(args[1]) || !/^\d+$/.test(args[2])) {
            this.say('usage: read OWNER OFFSET LENGTH');
            return true;
          }
          const data = await f.read(args[0], Number(args[1]), Number(args[2]));
          this.say(`read ${data.length} byte(s) at ${args[1]} of ${args[0]}: ${data.toString('hex')}${/^[\x20-\x7e]*$/.test(data.toString('latin1')) ? ` "${data.toString('latin1')}"` : ''}`);
          return true;
        }
        case 'write': {
          if (args.length < 3 || !/^\d+$/.test(args[1])) {
            this.say('usage: write OWNER OFFSET TEXT');
            return true;
          }
          const text = rest(3);
          await f.write(args[0], Number(args[1]), Buffer.from(text));
          this.say(`wrote ${Buffer.byteLength(text)} byte(s) at ${args[1]} of ${args[0]}`);
          return true;
        }
        case 'atomic':
          await this.atomic(args);
          return true;
        case 'dump':
          if (!this.jsonFlag('dump', args)) return true;
          if (args.length === 1) this.say(JSON.stringify(this.dumpJson()));
          else this.dump();
          return true;
        default:
          this.say(`unknown command '${cmd}'; type help`);
          return true;
      }
    } catch (e) {
      this.say(`error: ${(e as Error).message}`);
      if (e instanceof FabricClientError && e.code === 'EBUSY') {
        const to = f.closed ? null : f.withdraw();
        if (to !== null) this.say(`withdrew the unread message to peer ${to} from slot ${f.id}`);
      }
      return true;
    }
  }

  /** ping: sends it, then waits (bounded) for each pong, so that commands
   * after it, and the end of piped input, come after the answers. */
  /** Pings every other peer but the switch once it runs a peer (its slot
   * has a nodename: a guest's QEMU joins long before its famez guest
   * starts, and a ping left in this peer's one slot would hold up its
   * answers), now and as peers join (famez vm's demo). Gives up on a peer
   * after `waitMs`. */
  pingPeers(waitMs = 120_000): void {
    const f = this.fabric;
    const watch = (id: number) => {
      const until = Date.now() + waitMs;
      const look = () => {
        if (f.closed || !f.peers.some((p) => p.id === id)) return;
        if (f.nodenameOf(id) !== '') void this.run(() => this.ping(String(id))).catch(() => undefined);
        else if (Date.now() < until) setTimeout(look, 250).unref();
      };
      look();
    };
    for (const p of f.peers) if (!p.isSwitch) watch(p.id);
    f.on('join', ({ id }) => {
      if (id !== f.serverId) watch(id);
    });
  }

  /** The peers of other switches, as `who` lists them ([] when the switch does not say). */
  private async remote(): Promise<Array<{ gcid: string; nodename: string; cclass: string; sid: number; hops: number }>> {
    let peers;
    try {
      peers = await this.fabric.remotePeers({ timeoutMs: PING_WAIT_MS });
    } catch (e) {
      this.say(`no list of the other switches' peers: ${(e as Error).message}`);
      return [];
    }
    return peers.map((p) => ({ gcid: formatGcid(p.gcid), nodename: p.nodename, cclass: p.cclass, sid: p.sid, hops: p.hops }));
  }

  private async ping(dest: string): Promise<void> {
    const f = this.fabric;
    if (parseGcid(dest) || isNamedAfar(dest)) {
      try {
        const pong = await f.request(dest, 'ping', { replyTimeoutMs: PING_WAIT_MS, match: (m) => m.message?.kind === 'pong' });
        if (pong.gcid === undefined) this.say(`pong from ${this.who(pong.from)}`);
      } catch (e) {
        if (!(e instanceof FabricClientError && e.code === 'ETIMEDOUT')) throw e;
        this.say(`no pong from ${dest} within ${PING_WAIT_MS} ms`);
      }
      return;
    }
    const waiting = new Set(f.resolve(dest));
    let done!: () => void;
    const all = new Promise<void>((resolve) => (done = resolve));
    const onMessage = (m: FabricMessage) => {
      if (m.message?.kind === 'pong' && waiting.delete(m.from) && waiting.size === 0) done();
    };
    f.on('message', onMessage);
    const timer = setTimeout(done, PING_WAIT_MS);
    try {
      await this.send(dest, 'ping');
      if (waiting.size > 0) await all;
    } finally {
      clearTimeout(timer);
      f.off('message', onMessage);
    }
    for (const id of waiting) this.say(`no pong from ${this.who(id)} within ${PING_WAIT_MS} ms`);
  }

  private async send(dest: string, text: string): Promise<void> {
    if (parseGcid(dest) || isNamedAfar(dest)) {
      await this.fabric.send(dest, text);
      this.say(`sent to ${dest}: ${text}`);
      return;
    }
    const ids = this.fabric.resolve(dest);
    if (ids.length === 0) {
      this.say(`${dest}: no peers`);
      return;
    }
    await this.fabric.send(dest, text);
    this.say(`sent to ${ids.map((id) => this.who(id)).join(', ')}: ${text}`);
  }

  /** atomic OWNER OFFSET add N | swap N | cas EXPECT NEW [--size 4|8] [--key K]. */
  private async atomic(argv: string[]): Promise<void> {
    const usage = () => this.say('usage: atomic OWNER OFFSET add N | swap N | cas EXPECT NEW [--size 4|8] [--key K]');
    const args = [...argv];
    /** The value of flag `name` (taken out of args), undefined without it, null when bad. */
    const flag = (name: string, re: RegExp): string | null | undefined => {
      const at = args.indexOf(name);
      if (at < 0) return undefined;
      const v = args.splice(at, 2)[1];
      return v !== undefined && re.test(v) ? v : null;
    };
    const sized = flag('--size', /^[48]$/);
    const keyed = flag('--key', /^\d+$/);
    if (sized === null || keyed === null) return usage();
    const size = sized === '4' ? 4 : 8;
    const key = keyed === undefined ? undefined : Number(keyed);
    const number = (t: string | undefined) => (t !== undefined && /^(-?\d+|0x[0-9a-f]+)$/i.test(t) ? BigInt(t) : null);
    const [owner, offset, name, ...values] = args;
    const n = values.map(number);
    if (owner === undefined || offset === undefined || !/^\d+$/.test(offset) || n.some((v) => v === null)) return usage();
    const [a, b] = n as bigint[];
    let op: AtomicOp;
    if (name === 'add' && n.length === 1) op = { op: 'fetch-add', value: a, size };
    else if (name === 'swap' && n.length === 1) op = { op: 'swap', value: a, size };
    else if (name === 'cas' && n.length === 2) op = { op: 'compare-and-swap', expect: a, value: b, size };
    else return usage();
    const old = await this.fabric.atomic(owner, Number(offset), op, { key });
    const swapped = op.op === 'compare-and-swap' ? (old === BigInt.asUintN(size * 8, op.expect) ? ': swapped' : ': not swapped') : '';
    this.say(`atomic ${name} at ${offset} of ${owner} (${size} bytes): old value ${old} (0x${old.toString(16)})${swapped}`);
  }

  /** Whether `args` is nothing or `--json`; says the usage otherwise. */
  private jsonFlag(cmd: string, args: string[]): boolean {
    if (args.length === 0 || (args.length === 1 && args[0] === '--json')) return true;
    this.say(`usage: ${cmd} [--json]`);
    return false;
  }

  /** `who --json`: this peer and every other, in ID order. */
  private whoJson(): { id: number; nodename: string; peers: Array<{ id: number; nodename: string; switch: boolean }> } {
    const f = this.fabric;
    return { id: f.id, nodename: f.nodename, peers: f.peers.map((p) => ({ id: p.id, nodename: p.nodename, switch: p.isSwitch })) };
  }

  /** `dump --json`: what dump says, for scripts. */
  private dumpJson(): object {
    const f = this.fabric;
    return {
      id: f.id,
      nodename: f.nodename,
      attributes: f.attributes,
      fabric: { nClients: f.nClients, switch: f.serverId, vectors: f.transport.vectors, memory: f.transport.memory.byteLength },
      rings: f.rings ? { count: f.rings.count, capacity: f.rings.capacity, maxMessage: f.rings.maxMessage } : null,
      peers: f.peers.map((p) => ({ id: p.id, nodename: p.nodename, switch: p.isSwitch, attributes: p.attributes?.all ?? null })),
    };
  }

  private dump(): void {
    const f = this.fabric;
    const a = f.attributes;
    this.say(`peer ${f.id} '${f.nodename}': C-Class=${a.cclass},SID0=${a.SID0},CID0=${a.CID0}; link ${a.link}`);
    if (a.PFMSID !== null) this.say(`fabric manager: PFMSID=${a.PFMSID},PFMCID=${a.PFMCID}`);
    this.say(`fabric: ${f.nClients} peers, switch ${f.serverId}, ${f.transport.vectors} vectors each, shared memory ${f.transport.memory.byteLength} bytes`);
    if (f.rings) this.say(`ring channels: ${f.rings.count} of ${f.rings.capacity} bytes (messages up to ${f.rings.maxMessage})`);
    const peers = f.peers;
    if (peers.length === 0) this.say('no other peers');
    for (const p of peers) {
      const attrs = p.attributes ? Object.entries(p.attributes.all).map(([k, v]) => `${k}=${v}`).join(',') : 'attributes unknown';
      this.say(`peer ${p.id} '${p.nodename || '(no name)'}'${p.isSwitch ? ' (switch)' : ''}: ${attrs}`);
    }
  }
}
