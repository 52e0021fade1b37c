// Fabric-attached memory served by its switch (ts/link/fam.ts): Core64
// Read -> ReadResponse, Core64 Write -> StandaloneAck, Atomic1 Add, Swap
// and CAS -> AtomicResultsResponse with the old value, and every refusal as
// a StandaloneAck with its Gen-Z Reason, answered to the requester with the
// request's tag.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import test from 'ava';
import fc from 'fast-check';

import { Reason } from '../ts/genz/codes.js';
import { ecrc, pcrc } from '../ts/genz/crc.js';
import { decode, type Core64Read } from '../ts/genz/packets.js';
import {
  MAX_READ,
  WINDOW_OFFER,
  atomicRequest,
  decodeOffer,
  encodeOffer,
  isFamCode,
  isFamPacket,
  isFamRequest,
  parseResponse,
  readRequest,
  reasonName,
  refusal,
  serve,
  writeRequest,
  type AtomicOperation,
  type FamResponse,
  type FamStore,
} from '../ts/link/fam.js';
import { SharedMemory } from '../ts/native.js';
import { LineProcess, removeDir, spawnChild, tempDir, waitFor } from './helpers/wait.js';

const OWNER = 0x1000 + 1500; // 1:1500
const PEER = 0x2000 + 300; // 2:300

const store = (size = 4096, key: number | null = null): FamStore => ({ bytes: new Uint8Array(size), key });
const ask = (bytes: Uint8Array, s: FamStore | null) => parseResponse(serve(decode(bytes), s, OWNER));

test('a write is acknowledged and a read gives the bytes back, to the requester, with its tag', (t) => {
  const s = store();
  const w = ask(writeRequest({ from: PEER, to: OWNER, tag: 7, offset: 100, data: Buffer.from('hello') }), s);
  t.deepEqual(w, { tag: 7, source: OWNER, ok: true, data: null });
  t.is(Buffer.from(s.bytes.subarray(100, 105)).toString(), 'hello');
  const answer = serve(decode(readRequest({ from: PEER, to: OWNER, tag: 8, offset: 99, length: 7 })), s, OWNER);
  const p = decode(answer);
  t.deepEqual([p.class, p.DSID, p.DCID, p.SSID, p.SCID, p.Tag], ['Core64.ReadResponse', 2, 300, 1, 1500, 8]);
  const r = parseResponse(answer);
  t.true(r?.ok);
  t.deepEqual(Buffer.from((r as { data: Uint8Array }).data), Buffer.from('\0hello\0'));
});

test('outside the memory, a bad length, no R-Key, no memory: each refused with its Reason, the memory untouched', (t) => {
  const s = store(1024, 0xabcd);
  const reason = (bytes: Uint8Array, st: FamStore | null = s) => {
    const r = ask(bytes, st);
    return r && !r.ok ? r.reason : 'ok';
  };
  const key = 0xabcd;
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 1020, length: 5, key })), Reason.InvAccPerm);
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 2 ** 40, data: Buffer.from('x'), key })), Reason.InvAccPerm);
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, length: 0, key })), Reason.MalformedPkt);
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, length: MAX_READ + 1, key })), Reason.MalformedPkt);
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, data: Buffer.from('x') })), Reason.InvAccKey);
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, data: Buffer.from('x'), key: key + 1 })), Reason.InvAccKey);
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, length: 4 }), null), Reason.UnsupportedReq);
  t.true(s.bytes.every((b) => b === 0));
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 1023, data: Buffer.from('x'), key })), 'ok');
});

test('any request in range reads back what was written', (t) => {
  fc.assert(
    fc.property(fc.nat(4000), fc.uint8Array({ minLength: 1, maxLength: 96 }), fc.nat(4095), (offset, data, tag) => {
      const s = store();
      if (offset + data.length > 4096) return;
      t.true(ask(writeRequest({ from: PEER, to: OWNER, tag, offset, data }), s)?.ok);
      const r = ask(readRequest({ from: PEER, to: OWNER, tag, offset, length: data.length }), s);
      t.deepEqual(Buffer.from((r as { data: Uint8Array }).data), Buffer.from(data));
    }),
    { numRuns: 200 },
  );
});

// ---- atomics (famez's own Atomic1 layouts) --------------------------------

const atomic = (s: FamStore | null, offset: number, operation: AtomicOperation, o: { size?: number; key?: number; tag?: number } = {}) =>
  ask(atomicRequest({ from: PEER, to: OWNER, tag: o.tag ?? 1, offset, size: o.size ?? 8, key: o.key, operation }), s);
/** The old value an atomic answered, or its Reason's name. */
const old = (r: FamResponse | null): bigint | string => {
  if (!r) return 'no answer';
  if (!r.ok) return reasonName(r.reason);
  return r.data ? Buffer.from(r.data).readBigUInt64LE(0) : 'no value';
};
const add = (value: bigint): AtomicOperation => ({ op: 'fetch-add', value });
const cas = (expect: bigint, value: bigint): AtomicOperation => ({ op: 'compare-and-swap', expect, value });
const swap = (value: bigint): AtomicOperation => ({ op: 'swap', value });
const word = (s: FamStore, at: number, size = 8) => (size === 8 ? Buffer.from(s.bytes.buffer, s.bytes.byteOffset).readBigUInt64LE(at) : BigInt(Buffer.from(s.bytes.buffer, s.bytes.byteOffset).readUInt32LE(at)));

/** A store whose bytes start 1 byte into their buffer: no aligned words for
 * Atomics, so the plain read-modify-write path. */
const unaligned = (size = 4096): FamStore => ({ bytes: new Uint8Array(size + 1).subarray(1), key: null });
const STORES: [string, () => FamStore][] = [
  ['aligned', () => store()],
  ['shared', () => ({ bytes: new Uint8Array(new SharedArrayBuffer(4096)), key: null })],
  ['unaligned', () => unaligned()],
];

for (const [kind, make] of STORES) {
  test(`atomics (${kind} memory): fetch-add, swap and compare-and-swap of 8 and 4 bytes answer the old value to the requester, little-endian in memory`, (t) => {
    const s = make();
    const answer = serve(decode(atomicRequest({ from: PEER, to: OWNER, tag: 99, offset: 64, size: 8, operation: add(5n) })), s, OWNER);
    const p = decode(answer);
    t.deepEqual([p.class, p.DSID, p.DCID, p.SSID, p.SCID, p.Tag, (p as { Size?: number }).Size], ['Atomic1.AtomicResultsResponse', 2, 300, 1, 1500, 99, 8]);
    t.is(old(parseResponse(answer)), 0n);
    t.is(old(atomic(s, 64, add(0x1_0000_0000n))), 5n);
    t.is(word(s, 64), 0x1_0000_0005n);
    t.deepEqual([...s.bytes.subarray(64, 72)], [5, 0, 0, 0, 1, 0, 0, 0]);
    t.is(old(atomic(s, 64, swap(0x1122334455667788n))), 0x1_0000_0005n);
    t.is(old(atomic(s, 64, cas(1n, 2n))), 0x1122334455667788n, 'a compare that fails gives the value and leaves it');
    t.is(word(s, 64), 0x1122334455667788n);
    t.is(old(atomic(s, 64, cas(0x1122334455667788n, 42n))), 0x1122334455667788n, 'a compare that holds swaps');
    t.is(word(s, 64), 42n);
    // 4 bytes: the word only, its neighbours untouched.
    s.bytes.fill(0xee, 124, 136);
    s.bytes.fill(0, 128, 132);
    t.is(old(atomic(s, 128, add(7n), { size: 4 })), 0n);
    t.is(old(atomic(s, 128, swap(0xdeadbeefn), { size: 4 })), 7n);
    t.is(old(atomic(s, 128, cas(0xdeadbeefn, 3n), { size: 4 })), 0xdeadbeefn);
    t.is(old(atomic(s, 128, cas(0xdeadbeefn, 4n), { size: 4 })), 3n);
    t.deepEqual([...s.bytes.subarray(124, 136)], [0xee, 0xee, 0xee, 0xee, 3, 0, 0, 0, 0xee, 0xee, 0xee, 0xee]);
    // A 4-byte operation takes its operands mod 2^32.
    t.is(old(atomic(s, 128, add(0x7_0000_0001n), { size: 4 })), 3n);
    t.is(word(s, 128, 4), 4n);
  });

  test(`atomics (${kind} memory): additions wrap around at 2^64 and 2^32; -1n subtracts`, (t) => {
    const s = make();
    s.bytes.fill(0xff, 0, 8);
    t.is(old(atomic(s, 0, add(1n))), 2n ** 64n - 1n);
    t.is(word(s, 0), 0n);
    t.is(old(atomic(s, 0, add(-1n))), 0n);
    t.is(word(s, 0), 2n ** 64n - 1n);
    t.is(old(atomic(s, 8, add(0xffffffffn), { size: 4 })), 0n);
    t.is(old(atomic(s, 8, add(2n), { size: 4 })), 0xffffffffn);
    t.is(word(s, 8), 1n, 'no carry into the next word');
    t.is(old(atomic(s, 8, add(-2n), { size: 4 })), 1n);
    t.is(word(s, 8, 4), 0xffffffffn);
    t.is(word(s, 12, 4), 0n);
  });
}

test('atomics refused: without the R-Key, a Size other than 4 or 8, a misaligned address, outside the memory, no memory; the memory untouched', (t) => {
  const key = 0x5eed;
  const s = store(1024, key);
  const r = (offset: number, o: { size?: number; key?: number } = {}, st: FamStore | null = s, op = add(1n)) => old(atomic(st, offset, op, { key, ...o }));
  t.is(r(0, { key: undefined }), 'InvAccKey');
  t.is(r(0, { key: key + 1 }), 'InvAccKey');
  t.is(r(0, { key: undefined }, s, cas(0n, 1n)), 'InvAccKey');
  for (const size of [0, 1, 2, 3, 5, 7, 15]) t.is(r(0, { size }), 'MalformedPkt', `Size ${size}`);
  t.is(r(4), 'MalformedPkt', 'an 8-byte word at 4');
  t.is(r(2, { size: 4 }), 'MalformedPkt', 'a 4-byte word at 2');
  t.is(r(1023, { size: 4 }, s, swap(1n)), 'MalformedPkt');
  t.is(r(1024), 'InvAccPerm');
  t.is(r(1024, { size: 4 }), 'InvAccPerm');
  t.is(r(2 ** 40), 'InvAccPerm');
  t.is(r(0), 0n, 'the same request, with the key, aligned and in range, is served');
  t.true(s.bytes.subarray(8).every((b) => b === 0));
  t.is(word(s, 0), 1n);
  s.bytes[0] = 0;
  t.is(r(0, {}, null), 'UnsupportedReq');
  t.is(r(1016), 0n, 'the last word');
  t.is(r(1020, { size: 4 }), 0n, 'the last 4-byte word');
});

test('atomic requests and answers are memory traffic to the switches', (t) => {
  const req = decode(atomicRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, size: 8, operation: cas(1n, 2n) }));
  t.true(isFamPacket(req) && isFamRequest(req));
  const answer = decode(serve(req, store(), OWNER));
  t.true(isFamPacket(answer));
  t.false(isFamRequest(answer));
  t.true(isFamCode(req.OCL, req.OpCode) && isFamCode(answer.OCL, answer.OpCode));
  t.false(isFamCode(2, 0x05), 'Atomic1 Sum is not served');
  t.false(isFamCode(1, 0x04), 'nor a Control Write');
});

test('any sequence of fetch-adds, swaps and compare-and-swaps through serve is what a plain model of the words gives', (t) => {
  const ops = fc.array(
    fc.record({
      at: fc.nat(7),
      size: fc.constantFrom(4, 8),
      op: fc.constantFrom('fetch-add', 'swap', 'compare-and-swap', 'compare-and-swap'),
      a: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(0n, 1n, -1n, 2n ** 32n - 1n, 2n ** 63n)),
      b: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      same: fc.boolean(),
    }),
    { maxLength: 60 },
  );
  fc.assert(
    fc.property(ops, fc.constantFrom(...STORES.map(([, make]) => make)), (list, make) => {
      const s = make();
      const model = new DataView(new ArrayBuffer(64));
      for (const { at, size, op, a, b, same } of list) {
        const offset = at * 8 + (size === 4 && same ? 4 : 0);
        const bits = size * 8;
        const before = size === 8 ? model.getBigUint64(offset, true) : BigInt(model.getUint32(offset, true));
        // Compare with the word itself half the time, so that swaps happen.
        const expect = same ? before : BigInt.asUintN(bits, a);
        const operation: AtomicOperation = op === 'fetch-add' ? add(a) : op === 'swap' ? swap(a) : cas(expect, b);
        const next = op === 'fetch-add' ? before + BigInt.asUintN(bits, a) : op === 'swap' ? a : before === expect ? b : before;
        if (size === 8) model.setBigUint64(offset, BigInt.asUintN(64, next), true);
        else model.setUint32(offset, Number(BigInt.asUintN(32, next)), true);
        t.is(old(atomic(s, offset, operation, { size })), before);
      }
      t.deepEqual(Buffer.from(s.bytes.subarray(0, 64)), Buffer.from(model.buffer));
      t.true(s.bytes.subarray(64).every((x) => x === 0));
    }),
    { numRuns: 300 },
  );
});

test('hostile atomic requests (bits flipped, resealed) get an answer or are undecodable, and touch at most the word they name', (t) => {
  const reseal = (bytes: Uint8Array) => {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const d0 = v.getUint32(0, true);
    const LEN = ((d0 >>> 5) & 7) | (((d0 >>> 12) & 0xf) << 3);
    v.setUint32(0, ((d0 & 0x03ffffff) | (pcrc((d0 >>> 19) & 0x1f, LEN) << 26)) >>> 0, true);
    const last = bytes.length - 4;
    v.setUint32(last, ((v.getUint32(last, true) & 0xff) | (ecrc(bytes.subarray(0, bytes.length - 3)) << 8)) >>> 0, true);
    return bytes;
  };
  fc.assert(
    fc.property(
      fc.constantFrom<AtomicOperation>(add(3n), swap(9n), cas(0n, 5n)),
      fc.constantFrom(0, 8, 16, 4088, 4096),
      fc.array(fc.nat(), { minLength: 1, maxLength: 3 }),
      (operation, offset, flips) => {
        const s = store();
        const bytes = Uint8Array.from(atomicRequest({ from: PEER, to: OWNER, tag: 5, offset, size: 8, operation }));
        for (const n of flips) {
          // Mostly dword 2 (Size, RK) and Addr.
          const bit = n % 3 === 0 ? (n >> 2) % (bytes.length * 8) : n % 3 === 1 ? 64 + ((n >> 2) % 32) : 128 + ((n >> 2) % 64);
          bytes[bit >> 3]! ^= 1 << (bit & 7);
        }
        let p;
        try {
          p = decode(reseal(bytes));
        } catch {
          return;
        }
        const answer = decode(serve(p, s, OWNER));
        t.true(answer.class === 'Atomic1.AtomicResultsResponse' || answer.class === 'Core64.StandaloneAck', answer.class);
        const touched = [...s.bytes.keys()].filter((i) => s.bytes[i] !== 0);
        if (touched.length === 0) return;
        const addr = 'Addr' in p ? Number(p.Addr) : -1;
        t.true(touched.every((i) => i >= addr && i < addr + 8), `touched ${touched.join(',')} for Addr ${addr}`);
      },
    ),
    { numRuns: 2000 },
  );
});

// What a VM's CPU atomics on the mapped file are to the owner: another
// thread's Atomics on the same shared words, at the same time.
test('fetch-adds through serve and Atomics.add in another thread on the same shared words lose no update', async (t) => {
  const N = 30_000;
  const W = 2_000_000;
  const sab = new SharedArrayBuffer(64);
  const s: FamStore = { bytes: new Uint8Array(sab), key: null };
  const flag = new Int32Array(sab, 32, 1);
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads');
     const w64 = new BigUint64Array(workerData.sab, 0, 1);
     const w32 = new Uint32Array(workerData.sab, 8, 1);
     const flag = new Int32Array(workerData.sab, 32, 1);
     Atomics.store(flag, 0, 1);
     Atomics.notify(flag, 0);
     for (let i = 0; i < workerData.n; i++) { Atomics.add(w64, 0, 1n); Atomics.add(w32, 0, 1); }`,
    { eval: true, workerData: { sab, n: W } },
  );
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  Atomics.wait(flag, 0, 0, 30_000);
  t.is(Atomics.load(flag, 0), 1, 'the worker started');
  for (let i = 0; i < N; i++) {
    serve(decode(atomicRequest({ from: PEER, to: OWNER, tag: i % 4096, offset: 0, size: 8, operation: add(1n) })), s, OWNER);
    serve(decode(atomicRequest({ from: PEER, to: OWNER, tag: i % 4096, offset: 8, size: 4, operation: add(1n) })), s, OWNER);
  }
  t.is(await exited, 0);
  t.is(word(s, 0), BigInt(N + W));
  t.is(word(s, 8, 4), BigInt(N + W), 'the 4-byte word');
  t.is(word(s, 12, 4), 0n, 'and nothing past it');
});

// The same with the memory as `famez serve --fam` maps it (a file, mapped
// by the native SharedMemory, a plain ArrayBuffer) and another process
// mapping the file too, as a VM would, with CPU atomics on the same words.
test('fetch-adds through serve on a mapped file and Atomics.add in another process mapping it lose no update', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'fam');
  fs.writeFileSync(file, Buffer.alloc(4096));
  const shm = SharedMemory.fromFd(fs.openSync(file, 'r+'));
  let child: LineProcess | null = null;
  t.teardown(() => {
    if (child?.child.exitCode === null) child.child.kill('SIGKILL');
    shm.close();
    removeDir(dir);
  });
  const s: FamStore = { bytes: new Uint8Array(shm.buffer as ArrayBuffer), key: null };
  const N = 30_000;
  const W = 2_000_000;
  const native = path.join(__dirname, '..', 'index.js');
  child = new LineProcess(
    spawnChild(process.execPath, [
      '-e',
      `const fs = require('node:fs');
       const m = require(${JSON.stringify(native)}).SharedMemory.fromFd(fs.openSync(${JSON.stringify(file)}, 'r+'));
       const w64 = new BigUint64Array(m.buffer, 0, 1);
       const w32 = new Uint32Array(m.buffer, 8, 1);
       console.log('ready');
       for (let i = 0; i < ${W}; i++) { Atomics.add(w64, 0, 1n); Atomics.add(w32, 0, 1); }
       console.log('done');`,
    ], { pdeathsig: true }),
    'atomics child',
  );
  await child.waitFor(/^ready$/m, 30_000);
  for (let i = 0; i < N; i++) {
    serve(decode(atomicRequest({ from: PEER, to: OWNER, tag: i % 4096, offset: 0, size: 8, operation: add(1n) })), s, OWNER);
    serve(decode(atomicRequest({ from: PEER, to: OWNER, tag: i % 4096, offset: 8, size: 4, operation: add(1n) })), s, OWNER);
  }
  await child.waitFor(/^done$/m, 60_000);
  await waitFor(() => child!.child.exitCode !== null, 'the child exits', 30_000);
  t.is(child.child.exitCode, 0);
  t.is(word(s, 0), BigInt(N + W));
  t.is(word(s, 8, 4), BigInt(N + W));
  const disk = fs.readFileSync(file);
  t.deepEqual([disk.readBigUInt64LE(0), disk.readUInt32LE(8), disk.readUInt32LE(12)], [BigInt(N + W), N + W, 0]);
});

test('window offers round-trip; anything else of that length or type is no offer', (t) => {
  const o = { owner: 0x1000 + 500, addr: 0n, key: (1n << 40n) + 7n, size: 1 << 20, rkey: 4242 };
  const bytes = encodeOffer(o);
  t.is(bytes.length, 40);
  t.is(bytes[0], WINDOW_OFFER);
  t.deepEqual(decodeOffer(bytes), o);
  t.deepEqual(decodeOffer(encodeOffer({ ...o, rkey: null })), { ...o, rkey: null });
  t.is(decodeOffer(bytes.subarray(0, 39)), null);
  t.is(decodeOffer(new Uint8Array([...bytes, 0])), null);
  for (const [at, v] of [[0, 1], [1, 2], [2, 1], [33, 1], [32, 2]] as const) {
    const bad = bytes.slice();
    bad[at] = v;
    t.is(decodeOffer(bad), null, `byte ${at} = ${v}`);
  }
  const noKey = encodeOffer({ ...o, rkey: null });
  noKey[36] = 1; // a key without the flag
  t.is(decodeOffer(noKey), null);
  const big = bytes.slice();
  big[7] = 0x10; // a GCID over 28 bits
  t.is(decodeOffer(big), null);
});

test('refusal: the owner\'s checks, the same whether it or a neighbour by RMA does the request', (t) => {
  const read = (Addr: bigint, RDSize: number, RKey?: number) => decode(readRequest({ from: 0x2000 + 100, to: 0x1000 + 500, tag: 1, offset: Number(Addr), length: RDSize, key: RKey })) as Core64Read;
  t.is(refusal(read(0n, 8, 1), 64, 1), null);
  t.is(refusal(read(0n, 8), 64, 1), Reason.InvAccKey);
  t.is(refusal(read(0n, 8, 2), 64, 1), Reason.InvAccKey);
  t.is(refusal(read(60n, 8), 64, null), Reason.InvAccPerm);
  t.is(refusal(read(56n, 8), 64, null), null);
});
