// FAME-Z's link-up from the peer's side: `Link RFC` to the switch, then
// wait for the switch's CTL-Write to configure this peer (the reactions
// answer it with the Standalone Acknowledgment and the client emits
// `configured` once that is posted), a Link CTL NAK (ENAK), the client's
// close (ECLOSED) or the timeout (ETIMEDOUT), whichever comes first.
import type { EventEmitter } from 'node:events';

import { whenAborted } from '../abort.js';
import type { TextMessage } from '../genz/text.js';
import { FabricClientError, type FabricClientEvents, type LinkInfo } from './peer-types.js';

export interface LinkUpPeer {
  readonly serverId: number;
  on: EventEmitter<FabricClientEvents>['on'];
  off: EventEmitter<FabricClientEvents>['off'];
  send(dest: number, message: TextMessage, options?: { signal?: AbortSignal }): Promise<void>;
}

/** An abort of `signal` rejects with its reason (an already-aborted one
 * before anything is sent); every listener and the timer go either way. */
export function linkUp(peer: LinkUpPeer, timeoutMs: number, TTC: string, signal?: AbortSignal): Promise<LinkInfo> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<LinkInfo>((resolve, reject) => {
    let done = false;
    const finish = (outcome: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stopAbort();
      peer.off('configured', onConfigured);
      peer.off('message', onMessage);
      peer.off('close', onClose);
      outcome();
    };
    const onConfigured = (info: LinkInfo) => {
      if (info.from === peer.serverId) finish(() => resolve(info));
    };
    const onMessage = ({ from, message, text }: FabricClientEvents['message'][0]) => {
      if (from === peer.serverId && message?.kind === 'link-ctl-nak') finish(() => reject(new FabricClientError('ENAK', `the switch refused the link-up: ${text}`)));
    };
    const onClose = ({ reason }: { reason: string }) => finish(() => reject(new FabricClientError('ECLOSED', `closed during the link-up: ${reason}`)));
    const timer = setTimeout(
      () => finish(() => reject(new FabricClientError('ETIMEDOUT', `the switch did not configure this peer within ${timeoutMs} ms`))),
      timeoutMs,
    );
    const stopAbort = whenAborted(signal, (reason) => finish(() => reject(reason)));
    peer.on('configured', onConfigured);
    peer.on('message', onMessage);
    peer.on('close', onClose);
    peer.send(peer.serverId, { kind: 'link-rfc', TTC }, { signal }).catch((e: Error) => finish(() => reject(e)));
  });
}
