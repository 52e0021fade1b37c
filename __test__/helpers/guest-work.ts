// Run inside a test VM (vm-guest.test.ts): the library API over the guest
// transport, for what the `famez guest` commands do not cover. Prints one
// JSON line with the outcome and exits 0, or 1 with {"error": ...}; every
// wait is bounded.
//
//   guest-work.ts burst-send DEST COUNT   sendRing COUNT messages (messages.ts)
//   guest-work.ts burst-recv FROM COUNT   read them, checking order and content
//   guest-work.ts fam-write OFFSET TEXT   write TEXT into the FAM region
//   guest-work.ts fam-read OFFSET TEXT    wait until TEXT is there
import { FabricClient } from '../../ts/fabric/client.js';
import { openFam } from '../../ts/guest/fam.js';
import { GuestTransport } from '../../ts/guest/transport.js';
import { message, mismatch } from './messages.js';

const LIMIT_MS = 240_000;
const MAX = 1024;

function out(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${LIMIT_MS} ms: ${what}`)), LIMIT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function burstSend(dest: number, count: number): Promise<void> {
  const f = FabricClient.attach(GuestTransport.open({ mode: 'vfio' }), { nodename: 'burst-send' });
  try {
    const batch: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      batch.push(message(i, MAX));
      if (batch.length === 256 || i === count - 1) await bounded(f.sendRing(dest, batch.splice(0), { timeoutMs: LIMIT_MS }), 'the ring to drain');
    }
    out({ sent: count, id: f.id });
  } finally {
    f.close();
  }
}

async function burstRecv(from: number, count: number): Promise<void> {
  const f = FabricClient.attach(GuestTransport.open({ mode: 'vfio' }), { nodename: 'burst-recv' });
  let got = 0;
  let bad: string | null = null;
  let wakeups = 0;
  try {
    await bounded(
      new Promise<void>((resolve) => {
        f.on('data', ({ from: sender, messages }) => {
          if (sender !== from) return;
          wakeups++;
          for (const m of messages) {
            bad ??= got >= count ? `a message past the ${count} sent` : mismatch(m, got, MAX);
            got++;
          }
          if (got >= count || bad) resolve();
        });
      }),
      `${count} messages from peer ${from}`,
    );
    out({ received: got, bad, wakeups, id: f.id });
  } finally {
    f.close();
  }
}

async function famWrite(offset: number, text: string): Promise<void> {
  const fam = openFam();
  try {
    new Uint8Array(fam.sharedMemory.buffer as ArrayBuffer).set(Buffer.from(text), offset);
    out({ wrote: text, offset, bdf: fam.bdf, size: fam.size });
  } finally {
    fam.close();
  }
}

async function famRead(offset: number, text: string): Promise<void> {
  const fam = openFam();
  try {
    const view = Buffer.from(fam.sharedMemory.buffer as ArrayBuffer, offset, text.length);
    const start = Date.now();
    while (view.toString() !== text) {
      if (Date.now() - start > LIMIT_MS) throw new Error(`'${text}' never appeared at ${offset} (there: '${view.toString('hex')}')`);
      await new Promise((r) => setTimeout(r, 20));
    }
    out({ read: text, offset, bdf: fam.bdf, size: fam.size });
  } finally {
    fam.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd, a, b] = argv;
  switch (cmd) {
    case 'burst-send':
      return burstSend(Number(a), Number(b));
    case 'burst-recv':
      return burstRecv(Number(a), Number(b));
    case 'fam-write':
      return famWrite(Number(a), b);
    case 'fam-read':
      return famRead(Number(a), b);
    default:
      throw new Error(`unknown work '${cmd}'`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (e: unknown) => {
    out({ error: e instanceof Error ? `${(e as { code?: string }).code ?? ''} ${e.message}`.trim() : String(e) });
    process.exit(1);
  },
);
