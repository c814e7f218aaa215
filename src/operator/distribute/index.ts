// Distribution: the snapshot service the gateways stream from, ACK tracking, revocation fan-out and its relay
// to the other replicas.
export {
  createDistributor,
  mergeFleetViews,
  type Distributor,
  type DistributorOptions,
  type FleetView,
  type GatewayState,
} from "./distributor.ts";
export {
  startDistributionServer,
  type DistributionServer,
  type DistributionServerOptions,
} from "./server.ts";
export { DEFAULT_STREAM_AUDIENCE } from "./protocol.ts";
export {
  startRevocationRelay,
  revocationRelayName,
  type RevocationRelay,
  type RevocationRelayOptions,
} from "./revocation-relay.ts";
