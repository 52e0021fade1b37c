// famez's library API: the server, the host client, the guest transport,
// the switch (Fabric), libfabric links between switches (Link: libfabric is
// loaded only when one is opened), the pure protocol and the stanza helpers,
// and every error class they throw. The native classes are exported for advanced use.
export { Server, ServerError, type ServerConfig, type ServerEvents, type PeerEvent } from './server/server.js';
export { parseServeArgs, parseSize, UsageError, type ServeOptions } from './server/options.js';
export { Client, ClientError, type ClientEvents, type ConnectOptions, type PeerView } from './client/client.js';
export {
  FabricClient,
  FabricClientError,
  type Dest,
  type FabricClientEvents,
  type FabricClientOptions,
  type FabricMessage,
  type FabricPeer,
  type LinkInfo,
  type OwnAttributes,
  type PeerAttributes,
  type RemotePeer,
} from './fabric/client.js';
export type { AtomicOp, FamOptions, LinkUpOptions, RequestOptions, SendOptions } from './fabric/client.js';
export { formatGcid, parseGcid, type Gcid } from './fabric/remote.js';
export { Fabric, type FabricConfig, type FabricEvents, type MailboxPort, type PortCounters, type SwitchMessage } from './fabric/fabric.js';
export { RingCorrupt, RingReader, RingWriter, type RingBatchHandler, type RingVisitor } from './fabric/ring.js';
export { RingsDoNotFit } from './fabric/rings.js';
export { SlotCorrupt } from './fabric/slots.js';
export { GenZCodecError } from './fabric/genz-codec.js';
export { GuestTransport, type GuestTransportOptions } from './guest/transport.js';
export { GuestError, listIvshmem, type IvshmemDevice } from './guest/pci.js';
export { openFam, type FamRegion } from './guest/fam.js';
export { createFam, FamError, type FamFile } from './fam/create.js';
export type { PeerTransport, TransportEvents } from './transport.js';
export { Link, LinkError, LinkListener, libfabricAvailable, type LinkEvents, type LinkListenerEvents, type LinkOptions, type LinkState } from './link/ofi.js';
export { SwitchLinks, type LinkStatus, type SwitchLinksConfig, type SwitchLinksEvents } from './link/switch-links.js';
export { FamezError } from './errors.js';
export { NativeBindingError } from './native.js';
export { functionLogger, lineLogger, silentLogger, type LogEvent, type LogFields, type LogLevel, type Logger } from './log.js';
export { Monitor, type FabricEvent, type PeerView as MonitorPeerView, type SystemView } from './observe/monitor.js';
export * as protocol from './protocol.js';
export { qemuArgs, libvirtXml, stanzaText, plainQemuArgs, plainStanzaText, libvirtDoorbellShmem, libvirtPlainShmem } from './stanza.js';
export * as native from './native.js';
export * as genz from './genz/index.js';
export * as vm from './vm/index.js';
