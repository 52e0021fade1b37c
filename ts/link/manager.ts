// Which switch manages the fabric, as a pure state machine (docs/multi-host.md,
// "The fabric manager"). Every switch has a role: `primary` (claims at start),
// `secondary` (claims when no manager has been seen for graceMs) or `none`
// (never claims). A claim carries an epoch; the manager in charge is the
// claim with the highest epoch, the lower SID on a tie. A switch that claims
// and sees a claim ahead of its own withdraws — so an old primary that
// returns (epoch 1, or whatever it had) yields to the secondary that took
// over (a higher epoch) instead of fighting it; one taking over claims one
// more than the highest epoch it has seen. Fed what the switches that routes
// reach advertise and the time; no I/O, no clock.
import type { FmRole } from './topology.js';

export interface ManagerClaim {
  sid: number;
  role: FmRole;
  cid: number;
  /** 0: no claim. */
  epoch: number;
}

/** The manager in charge among `claims`: the highest epoch, the lower SID on a tie; null when nobody claims. */
export function inCharge(claims: readonly ManagerClaim[]): ManagerClaim | null {
  let best: ManagerClaim | null = null;
  for (const c of claims) {
    if (c.epoch <= 0) continue;
    if (!best || c.epoch > best.epoch || (c.epoch === best.epoch && c.sid < best.sid)) best = c;
  }
  return best;
}

export interface ElectionConfig {
  sid: number;
  cid: number;
  role: FmRole;
  /** A switch that may manage claims once nobody has claimed for this long (default 500 ms). */
  graceMs?: number;
}

export type ElectionEvent =
  /** This switch claims to manage the fabric, at `epoch`. */
  | { kind: 'claim'; epoch: number; took: ManagerClaim | null }
  /** This switch withdraws its claim: `to` is ahead of it. */
  | { kind: 'yield'; to: ManagerClaim }
  /** The manager in charge changed (null: none now). */
  | { kind: 'manager'; manager: ManagerClaim | null };

export class Election {
  private epoch = 0;
  private highest = 0;
  /** Since when no claim has been seen (NaN: one is seen). */
  private noneSince = NaN;
  /** A claim was ever seen (then even a primary waits graceMs before claiming). */
  private seenAny = false;
  private current: ManagerClaim | null = null;
  private readonly events: ElectionEvent[] = [];
  private readonly graceMs: number;
  /** The manager in charge before this one (what a claim took over from). */
  private last: ManagerClaim | null = null;

  constructor(readonly config: ElectionConfig) {
    this.graceMs = config.graceMs ?? 500;
  }

  /** This switch's claim, as it advertises it. */
  get own(): ManagerClaim {
    return { sid: this.config.sid, role: this.config.role, cid: this.config.cid, epoch: this.epoch };
  }

  /** The manager in charge, as this switch sees it. */
  get manager(): ManagerClaim | null {
    return this.current;
  }

  /** What the switches that routes reach advertise now (this one's own entry ignored), at `now`. */
  update(others: readonly ManagerClaim[], now: number): void {
    const rest = others.filter((c) => c.sid !== this.config.sid);
    for (const c of rest) if (c.epoch > this.highest) this.highest = c.epoch;
    const ahead = inCharge(rest);
    if (ahead) {
      this.seenAny = true;
      this.noneSince = NaN;
    }
    if (this.epoch > 0 && ahead && (ahead.epoch > this.epoch || (ahead.epoch === this.epoch && ahead.sid < this.config.sid))) {
      this.epoch = 0;
      this.events.push({ kind: 'yield', to: ahead });
    }
    if (this.epoch === 0 && !ahead) {
      if (Number.isNaN(this.noneSince)) this.noneSince = now;
      // A primary that never saw a manager claims at once (it starts the fabric).
      if (this.config.role !== 'none' && ((this.config.role === 'primary' && !this.seenAny) || now - this.noneSince >= this.graceMs)) {
        this.epoch = this.highest + 1;
        this.highest = this.epoch;
        this.events.push({ kind: 'claim', epoch: this.epoch, took: this.last });
      }
    }
    const next = inCharge([...rest, this.own]);
    if (next?.sid !== this.current?.sid || next?.epoch !== this.current?.epoch || next?.cid !== this.current?.cid) {
      if (this.current) this.last = this.current;
      this.current = next;
      this.events.push({ kind: 'manager', manager: next });
    }
  }

  /** When update() should run again with nothing new (a grace ending), or null. */
  pollTimeout(): number | null {
    if (this.epoch > 0 || this.config.role === 'none' || Number.isNaN(this.noneSince)) return null;
    return this.noneSince + this.graceMs;
  }

  pollEvent(): ElectionEvent | null {
    return this.events.shift() ?? null;
  }
}
