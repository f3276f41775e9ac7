/** Client protocol: framing, request validation, replies, commands, texts. Pure, no I/O. (Names and shard routing are the cluster's: src/cluster.) */

export * from './client-request';
export * from './frame-decoder';
export * from './frame-encoder';
export * from './replies';
export * from './request-validator';
export * from './slash-command';
export * from './texts';
