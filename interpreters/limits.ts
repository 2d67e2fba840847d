/**
 * Step resource limits (`limits.cores`, `limits.cpu`) on Linux, enforced with what the host
 * offers, detected at runtime (detectLimitSupport) and reported per step (`limitsReport`).
 *
 * Meaning (Courier leaves it undocumented, FORMAT.md §4.1):
 *   * `cores` = number of CPUs the step's processes may run on; 0 = no restriction.
 *   * `cpu`   = CPU bandwidth in CPUs, like `docker --cpus` (0.5 = half of one CPU's time,
 *               2 = two CPUs' worth); 0 = unlimited. NOTE the server default is cpu: 1, so a
 *               step from a default template is held to one CPU's worth of time when a
 *               cgroup is available (single-threaded commands are unaffected).
 *   * `timeoutSeconds` is not handled here: it becomes StepRequest.timeoutMs and runProcess
 *               kills the step's whole process group (SIGTERM, then SIGKILL).
 *
 * What is enforced, exactly:
 *   * cores: CPU affinity via `taskset -c <first N CPUs the agent may use>` when util-linux
 *     `taskset` is on PATH. Affinity is inherited, so children are bound too (a child could
 *     call sched_setaffinity itself: this is containment, not a security boundary). Without
 *     taskset: not enforced (reported).
 *   * cpu: a per-step cgroup with a CFS quota (period 100 ms, quota = cpu × period, at least
 *     1 ms): cgroup v2 `cpu.max` when the unified hierarchy delegates the cpu controller to
 *     the agent's cgroup, else cgroup v1 `cpu.cfs_quota_us` when the v1 cpu hierarchy is
 *     writable (the agent runs as root or was delegated its cgroup). Every process the step
 *     starts stays in the cgroup (it cannot leave without privileges), so the quota covers
 *     the whole tree; when the step ends, anything still in the cgroup is SIGKILLed (this
 *     also catches processes that escaped the process group with setsid) and the cgroup is
 *     removed. Without a usable cgroup: NOT enforced; instead the step runs at lower
 *     priority (`nice -n 10`), which only yields to other work, and the report says so.
 *   * A limit that cannot bind (cores >= the CPUs the agent may use, or cpu >= the CPUs the
 *     step may use) is not applied.
 *   * Memory, I/O and process-count limits are not part of Courier's `limits` and are not set.
 *
 * The wrapper is `/bin/sh -c 'echo $$ > <cgroup.procs>; exec "$@"' … taskset -c L nice -n N
 * <file> <args>`: the step joins its cgroup before its own program starts.
 */
import { constants as fsConstants } from 'node:fs'
import { access, mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { delimiter, join } from 'node:path'
import type { StepLimits } from './types.js'

export const CFS_PERIOD_US = 100_000
export const MIN_CFS_QUOTA_US = 1_000
/** Niceness for steps whose cpu limit cannot be enforced. */
export const UNENFORCED_CPU_NICE = 10
export const CGROUP_DIR_NAME = 'chorus-steps'

export interface CgroupSupport {
  version: 1 | 2
  /** Directory under which per-step cgroups are created. */
  parent: string
}

export interface LimitSupport {
  tasksetPath?: string
  nicePath?: string
  cgroup?: CgroupSupport
  /** CPUs the agent may run on (its own affinity). */
  allowedCpus: number[]
  /** Human notes on what was found, for the agent's start-up log. */
  notes: string[]
}

export interface DetectOptions {
  /** PATH to search for taskset and nice; default process.env.PATH. */
  pathEnv?: string
  /** Do not look for cgroups (tests, or operators who do not want the agent to create any). */
  disableCgroup?: boolean
  /** Use this directory as the cgroup parent instead of discovering one (must be writable). */
  cgroupParent?: string
  /** Root of the cgroup mounts; default /sys/fs/cgroup (tests). */
  procRoot?: string
}

/** Absolute path of an executable named `name` on `pathEnv`, or undefined. */
export async function findOnPath(name: string, pathEnv: string = process.env.PATH ?? ''): Promise<string | undefined> {
  for (const dir of pathEnv.split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, name)
    try {
      const st = await stat(candidate)
      if (!st.isFile()) continue
      await access(candidate, fsConstants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** Parses a Linux CPU list such as "0-3,8,10-11". */
export function parseCpuList(text: string): number[] {
  const cpus: number[] = []
  for (const part of text.trim().split(',')) {
    if (part === '') continue
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim())
    if (!m) continue
    const lo = Number(m[1])
    const hi = m[2] === undefined ? lo : Number(m[2])
    for (let c = lo; c <= hi && cpus.length < 4096; c++) cpus.push(c)
  }
  return cpus
}

async function readAllowedCpus(): Promise<number[]> {
  try {
    const status = await readFile('/proc/self/status', 'utf8')
    const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(status)
    if (m) {
      const list = parseCpuList(m[1]!)
      if (list.length > 0) return list
    }
  } catch {
    // not Linux
  }
  return Array.from({ length: availableParallelism() }, (_, i) => i)
}

async function probeCgroupDir(parent: string, version: 1 | 2): Promise<boolean> {
  const probe = join(parent, `chorus-probe-${process.pid}`)
  try {
    await mkdir(parent, { recursive: true })
    await mkdir(probe)
  } catch {
    return false
  }
  try {
    const control = join(probe, version === 2 ? 'cpu.max' : 'cpu.cfs_quota_us')
    await access(control, fsConstants.W_OK)
    return true
  } catch {
    return false
  } finally {
    await rmdir(probe).catch(() => {})
  }
}

async function detectCgroup(root: string): Promise<CgroupSupport | undefined> {
  let self: string
  try {
    self = await readFile('/proc/self/cgroup', 'utf8')
  } catch {
    return undefined
  }
  const lines = self.trim().split('\n').map((l) => l.split(':'))
  // cgroup v2: the unified hierarchy, with cpu delegated to our own cgroup's children.
  const unified = lines.find((l) => l[0] === '0' && l[1] === '')
  if (unified) {
    const own = unified.slice(2).join(':')
    for (const mount of [root, join(root, 'unified')]) {
      const dir = join(mount, own)
      try {
        const subtree = await readFile(join(dir, 'cgroup.subtree_control'), 'utf8')
        if (!subtree.split(/\s+/).includes('cpu')) continue
        const parent = join(dir, CGROUP_DIR_NAME)
        // The parent itself must get the cpu controller for its children.
        await mkdir(parent, { recursive: true })
        await writeFile(join(parent, 'cgroup.subtree_control'), '+cpu').catch(() => {})
        if (await probeCgroupDir(parent, 2)) return { version: 2, parent }
      } catch {
        // not usable
      }
    }
  }
  // cgroup v1: the hierarchy with the cpu controller.
  const v1 = lines.find((l) => (l[1] ?? '').split(',').includes('cpu'))
  if (v1) {
    const own = v1.slice(2).join(':')
    for (const mountName of ['cpu', 'cpu,cpuacct', 'cpuacct,cpu']) {
      const mount = join(root, mountName)
      try {
        await access(join(mount, 'cpu.cfs_quota_us'))
      } catch {
        continue
      }
      const parent = join(mount, own, CGROUP_DIR_NAME)
      if (await probeCgroupDir(parent, 1)) return { version: 1, parent }
    }
  }
  return undefined
}

/** Finds what this host offers for enforcing limits. Never throws. */
export async function detectLimitSupport(opts: DetectOptions = {}): Promise<LimitSupport> {
  const notes: string[] = []
  const support: LimitSupport = { allowedCpus: await readAllowedCpus(), notes }
  if (process.platform !== 'linux') {
    notes.push(`limits: ${process.platform} is not Linux; cores and cpu are not enforced`)
    return support
  }
  const tasksetPath = await findOnPath('taskset', opts.pathEnv)
  const nicePath = await findOnPath('nice', opts.pathEnv)
  if (tasksetPath) support.tasksetPath = tasksetPath
  else notes.push('limits: taskset (util-linux) not found; limits.cores is not enforced')
  if (nicePath) support.nicePath = nicePath
  if (opts.disableCgroup) {
    notes.push('limits: cgroups disabled by configuration; limits.cpu is not enforced')
  } else if (opts.cgroupParent !== undefined) {
    const v = (await probeCgroupDir(opts.cgroupParent, 2)) ? 2 : (await probeCgroupDir(opts.cgroupParent, 1)) ? 1 : undefined
    if (v) support.cgroup = { version: v, parent: opts.cgroupParent }
    else notes.push(`limits: cgroup parent ${opts.cgroupParent} is not a writable cpu cgroup; limits.cpu is not enforced`)
  } else {
    const cg = await detectCgroup(opts.procRoot ?? '/sys/fs/cgroup')
    if (cg) support.cgroup = cg
    else notes.push('limits: no writable cgroup (v2 cpu.max or v1 cpu.cfs_quota_us); limits.cpu is not enforced, steps are reniced instead')
  }
  if (support.cgroup) notes.push(`limits: cpu quota via cgroup v${support.cgroup.version} under ${support.cgroup.parent}`)
  if (support.tasksetPath) notes.push(`limits: cpu affinity via ${support.tasksetPath}`)
  return support
}

let cached: Promise<LimitSupport> | undefined
/** detectLimitSupport() with default options, computed once per process. */
export function limitSupport(): Promise<LimitSupport> {
  cached ??= detectLimitSupport()
  return cached
}

export interface AppliedLimits {
  /** The command line to spawn instead of (file, args). */
  wrap(file: string, args: string[]): { file: string; args: string[] }
  /** One line per limit: what was enforced, or why not. */
  report: string[]
  /** The step's cgroup directory, if one was created. */
  cgroupDir?: string
  /** Kills whatever is left in the step's cgroup and removes it. Never throws. */
  cleanup(): Promise<void>
}

let serial = 0

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/**
 * Prepares the limits of one step attempt. `label` names the cgroup (sanitised). With no
 * limits, wrap() is the identity and nothing is created.
 */
export async function applyLimits(limits: StepLimits | undefined, support: LimitSupport, label: string): Promise<AppliedLimits> {
  const report: string[] = []
  const prefix: string[] = []
  let cgroupDir: string | undefined
  let procsFile: string | undefined
  const none: AppliedLimits = { wrap: (file, args) => ({ file, args }), report, cleanup: async () => {} }
  if (limits === undefined) return none
  const available = support.allowedCpus.length
  const cores = Number.isFinite(limits.cores) && limits.cores > 0 ? Math.floor(limits.cores) : 0
  const cpu = Number.isFinite(limits.cpu) && limits.cpu > 0 ? limits.cpu : 0
  let usable = available

  if (cores > 0) {
    if (cores >= available) {
      report.push(`cores=${cores}: not restricted (the agent may use only ${available} CPU${available === 1 ? '' : 's'})`)
    } else if (support.tasksetPath) {
      const list = support.allowedCpus.slice(0, cores)
      prefix.push(support.tasksetPath, '-c', list.join(','))
      usable = cores
      report.push(`cores=${cores}: enforced, affinity CPU ${list.join(',')} (taskset)`)
    } else {
      report.push(`cores=${cores}: NOT enforced (taskset not installed)`)
    }
  }

  if (cpu > 0) {
    if (cpu >= usable) {
      report.push(`cpu=${cpu}: not restricted (the step may use only ${usable} CPU${usable === 1 ? '' : 's'})`)
    } else if (support.cgroup) {
      const quota = Math.max(MIN_CFS_QUOTA_US, Math.round(cpu * CFS_PERIOD_US))
      const name = `step-${process.pid}-${++serial}-${label.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64)}`
      const dir = join(support.cgroup.parent, name)
      try {
        await mkdir(dir)
        if (support.cgroup.version === 2) {
          await writeFile(join(dir, 'cpu.max'), `${quota} ${CFS_PERIOD_US}`)
        } else {
          await writeFile(join(dir, 'cpu.cfs_period_us'), String(CFS_PERIOD_US))
          await writeFile(join(dir, 'cpu.cfs_quota_us'), String(quota))
        }
        cgroupDir = dir
        procsFile = join(dir, 'cgroup.procs')
        report.push(`cpu=${cpu}: enforced, CFS quota ${quota}/${CFS_PERIOD_US} us (cgroup v${support.cgroup.version} ${dir})`)
      } catch (e) {
        await rmdir(dir).catch(() => {})
        report.push(`cpu=${cpu}: NOT enforced (cgroup setup failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`)
      }
    }
    if (cgroupDir === undefined && !(cpu >= usable)) {
      if (!support.cgroup) report.push(`cpu=${cpu}: NOT enforced (no writable cgroup on this host)`)
      if (support.nicePath) {
        prefix.push(support.nicePath, '-n', String(UNENFORCED_CPU_NICE))
        report.push(`cpu=${cpu}: priority lowered instead (nice ${UNENFORCED_CPU_NICE})`)
      }
    }
  }

  const cleanup = async (): Promise<void> => {
    if (cgroupDir === undefined) return
    for (let i = 0; i < 40; i++) {
      let pids: number[] = []
      try {
        pids = (await readFile(join(cgroupDir, 'cgroup.procs'), 'utf8')).split('\n').filter((l) => l.trim() !== '').map(Number)
      } catch {
        return // already gone
      }
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // gone
        }
      }
      try {
        await rmdir(cgroupDir)
        return
      } catch {
        await sleep(25)
      }
    }
  }

  return {
    wrap(file, args) {
      const chain = [...prefix, file, ...args]
      if (procsFile === undefined) {
        const [head, ...rest] = chain
        return { file: head!, args: rest }
      }
      return {
        file: '/bin/sh',
        args: ['-c', 'echo $$ > "$0" || { echo "chorus: cannot join the step cgroup $0" >&2; exit 125; }; exec "$@"', procsFile, ...chain],
      }
    },
    report,
    ...(cgroupDir !== undefined ? { cgroupDir } : {}),
    cleanup,
  }
}
