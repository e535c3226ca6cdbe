export * from './types.js';
export { type NetnsCommands, type IprouteOptions, IprouteError, netnsCommands } from './iproute.js';
export { scanNetns, KATA_TAP_SUFFIX } from './scan.js';
export {
  type Endpoint,
  type EndpointOptions,
  type GuestInterface,
  type InternetworkingModel,
  type NicSink,
  type NicSpec,
  createEndpoints,
  newInterfaces,
  tapName,
} from './endpoint.js';
export { type NetworkRecord, type TapRecord, emptyRecord, cleanupNetworkLeftovers } from './record.js';
