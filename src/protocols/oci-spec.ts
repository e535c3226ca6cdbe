// OCI runtime-spec JSON ↔ the agent protocol's grpc.Spec, both ways: the host shim needs JSON → grpc, the agent
// grpc → JSON to write a bundle for crun. One entry point for the split modules:
// oci-spec-types.ts (the one OciSpec type), oci-spec-to-grpc.ts, oci-spec-from-grpc.ts, oci-spec-json.ts.
export type * from './oci-spec-types.js';
export { processToGrpc, resourcesToGrpc, specToGrpc } from './oci-spec-to-grpc.js';
export { processFromGrpc, resourcesFromGrpc, specFromGrpc } from './oci-spec-from-grpc.js';
export { parseOciJson, stringifyOciJson } from './oci-spec-json.js';
