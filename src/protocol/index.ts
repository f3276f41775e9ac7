/** Client protocol: framing, request validation, replies, names, shard routing, commands. Pure, no I/O. */

export * from './client-request';
export * from './frame-decoder';
export * from './frame-encoder';
export * from './names';
export * from './replies';
export * from './request-validator';
export * from './shard-for';
export * from './slash-command';
export * from './texts';
