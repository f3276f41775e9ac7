export * from './transport';
export * from './ipc-error';
export * from './envelope';
export * from './endpoint';
export * from './mtypes';
export { SendBacklog } from './send-backlog';
export { LocalQueue, LocalTransport } from './local/local-transport';
export { SysvQueue, readKernelLimit } from './sysv/sysv-queue';
export { SysvTransport, defaultSysvTransportOptions } from './sysv/sysv-transport';
