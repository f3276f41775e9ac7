'use strict';
/**
 * PM2 apps of chatd-cluster: `pm2 start ecosystem.config.js` (or `npm start`).
 * The configuration is validated here, before anything starts: a bad value stops the start
 * with a message naming it. Each process validates it again at its own start.
 */
const path = require('node:path');
let loadConfig;
try {
  ({ loadConfig } = require('./dist/src/config'));
} catch (err) {
  console.error('chatd-cluster: dist/ is missing or stale: run `npm run build` first (npm start does it)');
  throw err;
}

let config;
try {
  config = loadConfig(process.env);
} catch (err) {
  // PM2 prints this and starts nothing.
  console.error(`chatd-cluster: ${err.message}`);
  throw err;
}

// CPU_PROF_DIR=<absolute dir>: every process writes a V8 CPU profile there when it stops
// (`node --cpu-prof`; docs/benchmarks.md, "Profiling"). Node refuses --cpu-prof in NODE_OPTIONS.
const cpuProfDir = process.env.CPU_PROF_DIR;
if (cpuProfDir !== undefined && cpuProfDir !== '' && !path.isAbsolute(cpuProfDir)) {
  const msg = `chatd-cluster: CPU_PROF_DIR must be an absolute path, got ${JSON.stringify(cpuProfDir)}`;
  console.error(msg);
  throw new Error(msg);
}

const common = {
  cwd: __dirname,
  ...(cpuProfDir ? { node_args: ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] } : {}),
  exec_mode: 'fork',
  autorestart: true,
  wait_ready: true,
  listen_timeout: 10000,
  kill_timeout: 5000,
  min_uptime: 1000,
  max_restarts: 50,
  restart_delay: 100,
  // 78: the queue at MQ_KEY was refused (untrusted owner/creator or world-accessible mode; see
  // ops/README.md). Restarting cannot fix that: PM2 stops the app and the refusal stays in its log.
  stop_exit_codes: [78],
  merge_logs: true,
  time: false,
  env: {
    // Everything the processes read, as validated above (defaults filled in).
    CHATD_HOST: config.chatdHost,
    CHATD_PORT: String(config.chatdPort),
    MQ_KEY: String(config.mqKey),
    CHANNELD_SHARDS: String(config.shards),
    CHANNELS: String(config.channels),
    // What carries the cluster: the host's SysV queue (sysv) or NATS (docs/multi-host.md).
    TRANSPORT: config.transport,
    NATS_URL: config.natsUrls.join(','),
    CLUSTER_NAME: config.clusterName,
    STATUS_HOST: config.statusHost,
    STATUS_PORT: String(config.statusPort),
    // Which apps this host runs, where its shard indexes start, and its name in heartbeats
    // (docs/multi-host.md): the collector checks pids and PM2 events only for its own host.
    HOST_ROLE: config.hostRole,
    SHARD_BASE: String(config.shardBase),
    HOST_ID: config.hostId,
  },
};

// HOST_ROLE (docs/multi-host.md): `all` runs everything here (the default, one host);
// `front` runs chatD, gc and the status app; `shards` runs only the shards, at indexes
// SHARD_BASE .. SHARD_BASE + CHANNELD_SHARDS - 1. Several hosts talk over NATS only.
const front = config.hostRole !== 'shards';
const shards = config.hostRole !== 'front';

module.exports = {
  apps: [
    ...(front ? [{ ...common, name: 'gc', script: path.join(__dirname, 'dist/src/gc/main.js'), instances: 1 }] : []),
    ...(shards
      ? [
          {
            ...common,
            name: 'channeld',
            script: path.join(__dirname, 'dist/src/channeld/main.js'),
            instances: config.shards,
            instance_var: 'NODE_APP_INSTANCE',
          },
        ]
      : []),
    ...(front
      ? [
          {
            ...common,
            name: 'chatd',
            script: path.join(__dirname, 'dist/src/chatd/main.js'),
            instances: 1,
            // A stopping chatD answers what it has read, closes every connection, then waits for the
            // removals (ChatdServer.stopBudgetMs: 2 x CHATD_REQUEST_TIMEOUT_MS + 5 s, and 1 s of
            // margin in main.ts): PM2 must not SIGKILL it before (docs/operations.md, "Reload").
            kill_timeout: config.requestTimeoutMs * 2 + 7000,
          },
        ]
      : []),
    // /metrics and the live status page (docs/status.md); STATUS_PORT=0 leaves it out.
    ...(front && config.statusPort > 0 ? [{ ...common, name: 'status', script: path.join(__dirname, 'dist/src/status/main.js'), instances: 1 }] : []),
  ],
};
