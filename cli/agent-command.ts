// The `chorus agent` command, shared by cli/main.ts (the whole CLI, an ES module bundle) and
// cli/agent-script.ts (the agent alone, a classic script run from V8's code cache).
import type { Command } from 'commander'
import { readFile } from 'node:fs/promises'
import { EXIT } from './exit.js'
import { collectAttr, fail, keepRunningOnRejection, makeLogger, onShutdown } from './program.js'

export interface AgentCommandHooks {
  /** Called once AgentRuntime.start() has resolved: store open, libp2p listening, the coordinator being dialled. */
  started?: () => void
}

export function registerAgentCommand(program: Command, hooks: AgentCommandHooks = {}): void {
  program.command('agent')
    .description('Run an agent: joins the mesh, runs the jobs that target this node, sends signed results')
    .requiredOption('--data <dir>', 'data directory (key, level store)')
    .requiredOption('--join <multiaddr>', 'the coordinator\'s libp2p address, e.g. /ip4/127.0.0.1/tcp/7700')
    .requiredOption('--coordinator-key <key>', 'the coordinator\'s public key (printed by `chorus keys`; write --coordinator-key=KEY, as a key may start with "-"); jobs signed by any other key are refused')
    .option('--node-id <id>', 'this node\'s id (default: the id stored in the data directory, else the host name)')
    .option('--listen <multiaddr...>', 'libp2p listen addresses', ['/ip4/127.0.0.1/tcp/0'])
    .option('--attr <key=value>', 'a custom attribute advertised to the coordinator (repeatable)', collectAttr, {})
    .option('--config <file>', 'agent configuration (JSON): allow (allowlist), interpreters (external), attributes, restartMode; see the README')
    .option('--allow-any', 'run every command of every signed job (overrides the allowlist; logged as a warning)')
    .option('--enroll-token-file <file>', 'file holding the enrolment token (chorus enroll create) this node joins with on its first start; or set $CHORUS_ENROLL_TOKEN')
    .option('--enroll-token <token>', 'the enrolment token itself (visible to local users in the process list: prefer the file or $CHORUS_ENROLL_TOKEN)')
    .option('--metrics <host:port>', 'serve Prometheus metrics on this loopback address (GET /metrics): outbox depth, running steps, step durations, coordinator reachability')
    .addHelpText('after', '\nExample: chorus agent --data /var/lib/chorus/agent --join /ip4/10.0.0.5/tcp/7700 --coordinator-key=KEY --enroll-token-file /etc/chorus/enroll.token --metrics 127.0.0.1:9464')
    .action(async (o: { data: string; join: string; coordinatorKey: string; nodeId?: string; listen: string[]; attr: Record<string, string>; config?: string; allowAny?: boolean; enrollToken?: string; enrollTokenFile?: string; metrics?: string }) => {
      const { decodePublicKey } = await import('../protocol/keys.js')
      try { decodePublicKey(o.coordinatorKey) } catch (err) { fail(`--coordinator-key: ${(err as Error).message}`, 2) }
      const { multiaddr } = await import('@multiformats/multiaddr')
      try { multiaddr(o.join) } catch (err) { fail(`--join is not a multiaddr: ${o.join} (${(err as Error).message}); e.g. /ip4/10.0.0.5/tcp/7700`, 2) }
      const { AgentRuntime, loadAgentConfig } = await import('../agent/runtime.js')
      let fileConfig: import('../agent/runtime.js').AgentFileConfig = {}
      if (o.config) {
        try { fileConfig = await loadAgentConfig(o.config) } catch (err) { fail(`--config: ${(err as Error).message}`, 2) }
      }
      if (o.allowAny) fileConfig.allow = 'any'
      let enrollToken = o.enrollToken ?? process.env.CHORUS_ENROLL_TOKEN
      if (o.enrollTokenFile) {
        try { enrollToken = (await readFile(o.enrollTokenFile, 'utf8')).trim() } catch (err) { fail(`--enroll-token-file: ${(err as Error).message}`, 2) }
      }
      const logger = await makeLogger('agent')
      keepRunningOnRejection(logger)
      const rt = new AgentRuntime({ dataDir: o.data, join: o.join, coordinatorKey: o.coordinatorKey, listen: o.listen, attributes: { ...fileConfig.attributes, ...o.attr }, fileConfig, logger, ...(o.nodeId ? { nodeId: o.nodeId } : {}), ...(enrollToken ? { enrollToken } : {}), ...(o.metrics ? { metrics: o.metrics } : {}) })
      onShutdown(() => rt.stop())
      await rt.start().catch((err: Error) => fail(err.message, EXIT.usage))
      hooks.started?.()
    })
}

/**
 * The modules the agent command loads, all at once: `npm run build` loads them to prime the
 * agent's code cache (cli/code-cache.ts). Missing one here only leaves it out of the primed cache.
 */
export function loadAgentModules(): Promise<unknown> {
  return Promise.all([import('../protocol/keys.js'), import('@multiformats/multiaddr'), import('../agent/runtime.js'), import('pino')])
}
