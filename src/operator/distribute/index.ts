// Distribution: the snapshot service the gateways stream from, ACK tracking and revocation fan-out.
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
