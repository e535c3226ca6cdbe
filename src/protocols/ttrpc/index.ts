export * from './client.js';
export * from './frame.js';
export * from './server.js';
export * from './status.js';
export { EncodedMessage, encodeBytesMessage } from './envelope.js';
