// The physical layer of the simulated network: per-node link profiles, latency draws, loss,
// duplication, reordering, symmetric and asymmetric partitions, nodes that drop off the
// network entirely (edge links), and the gossip overlay (who is meshed with whom).
//
// Everything is a pure function of the PRNG and the fault state; nothing here schedules.
import type { Prng } from './prng.js'

export type LinkProfileName = 'datacenter' | 'wan' | 'edge'

export interface LinkProfile {
  name: LinkProfileName
  /** Median one-way latency in ms and the log-normal shape of its distribution. */
  latency_ms_median: number
  latency_sigma: number
  /** Upper bound on a latency draw (a queue cannot grow without bound either). */
  latency_ms_max: number
  /** Probability that one datagram (gossip frame) is lost while faults are on. */
  loss: number
  /** Multiplies FaultSettings.rpc_reset: cellular and satellite links reset streams far more often. */
  rpc_reset_factor: number
  /** Worse links are chosen over better ones when two profiles meet. */
  rank: number
}

/** One-way latencies and loss rates; medians from typical intra-DC, cross-region and cellular links. */
export const LINK_PROFILES: Record<LinkProfileName, LinkProfile> = {
  datacenter: { name: 'datacenter', latency_ms_median: 0.4, latency_sigma: 0.5, latency_ms_max: 20, loss: 0.0001, rpc_reset_factor: 0.5, rank: 0 },
  wan: { name: 'wan', latency_ms_median: 45, latency_sigma: 0.45, latency_ms_max: 800, loss: 0.005, rpc_reset_factor: 2.5, rank: 1 },
  edge: { name: 'edge', latency_ms_median: 160, latency_sigma: 0.8, latency_ms_max: 5_000, loss: 0.03, rpc_reset_factor: 25, rank: 2 },
}

export interface FaultSettings {
  /** Multiplies every profile's loss rate; 0 disables loss. */
  loss_scale: number
  /** Probability that a delivered gossip frame is delivered twice by the network. */
  duplicate: number
  /** Probability that a frame is held back (extra delay of several medians), reordering it. */
  reorder: number
  /** Probability that one rpc exchange is reset (the request may or may not have been processed), times the link's rpc_reset_factor. */
  rpc_reset: number
  /** Probability that a node's gossip dedupe cache has already forgotten a message (the app sees it twice). */
  app_duplicate: number
  /** Probability that one disk write is slow (20-100 ms). */
  disk_slow: number
}

export const NO_FAULTS: FaultSettings = { loss_scale: 0, duplicate: 0, reorder: 0, rpc_reset: 0, app_duplicate: 0, disk_slow: 0 }

export const DEFAULT_FAULTS: FaultSettings = { loss_scale: 1, duplicate: 0.002, reorder: 0.02, rpc_reset: 0.002, app_duplicate: 0.001, disk_slow: 0.005 }

/**
 * A partition separates `members` from every other node. Symmetric: nothing crosses either way.
 * Asymmetric `outbound`: members receive but cannot send out; `inbound`: members send but receive nothing.
 */
export interface Partition {
  id: number
  members: Set<number>
  mode: 'symmetric' | 'outbound' | 'inbound'
}

export class NetworkModel {
  readonly profiles: LinkProfile[]
  /** Nodes cut off from everything (edge link down, cable pulled). */
  readonly offline: Uint8Array
  partitions: Partition[] = []
  /** Single links cut both ways (a firewall between two nodes), as `min:max` pairs. */
  readonly cuts = new Set<string>()
  faults: FaultSettings = { ...DEFAULT_FAULTS }
  private nextPartitionId = 1

  constructor(nodeCount: number, private readonly prng: Prng) {
    this.profiles = new Array<LinkProfile>(nodeCount).fill(LINK_PROFILES.datacenter)
    this.offline = new Uint8Array(nodeCount)
  }

  linkProfile(a: number, b: number): LinkProfile {
    const pa = this.profiles[a]!
    const pb = this.profiles[b]!
    return pa.rank >= pb.rank ? pa : pb
  }

  /** True when a frame from a to b cannot get through now. */
  blocked(a: number, b: number): boolean {
    if (this.offline[a] === 1 || this.offline[b] === 1) return true
    if (this.cuts.size > 0 && this.cuts.has(a < b ? `${a}:${b}` : `${b}:${a}`)) return true
    for (const p of this.partitions) {
      const inA = p.members.has(a)
      const inB = p.members.has(b)
      if (inA === inB) continue
      if (p.mode === 'symmetric') return true
      if (p.mode === 'outbound' && inA) return true
      if (p.mode === 'inbound' && inB) return true
    }
    return false
  }

  /** One-way latency draw for a frame from a to b, in ms, including reordering holds. */
  latency(a: number, b: number): number {
    const p = this.linkProfile(a, b)
    let ms = Math.min(p.latency_ms_max, this.prng.logNormal(p.latency_ms_median, p.latency_sigma))
    if (this.faults.reorder > 0 && this.prng.chance(this.faults.reorder)) ms += this.prng.exp(5 * p.latency_ms_median)
    return Math.max(0.05, ms)
  }

  /** Whether a best-effort frame from a to b is lost. */
  lost(a: number, b: number): boolean {
    if (this.faults.loss_scale <= 0) return false
    return this.prng.chance(this.linkProfile(a, b).loss * this.faults.loss_scale)
  }

  partition(members: Iterable<number>, mode: Partition['mode']): Partition {
    const p: Partition = { id: this.nextPartitionId++, members: new Set(members), mode }
    this.partitions.push(p)
    return p
  }

  heal(id: number): void {
    this.partitions = this.partitions.filter((p) => p.id !== id)
  }

  /** Cuts the link between a and b both ways (everything else stays up). */
  cut(a: number, b: number): void {
    this.cuts.add(a < b ? `${a}:${b}` : `${b}:${a}`)
  }

  uncut(a: number, b: number): void {
    this.cuts.delete(a < b ? `${a}:${b}` : `${b}:${a}`)
  }

  healAll(): void {
    this.partitions = []
    this.cuts.clear()
    this.offline.fill(0)
  }
}

/**
 * A gossip overlay close to a gossipsub mesh: every node keeps about `degree` mesh peers.
 * Each node draws degree/2 random partners and links both ways, so degrees average `degree`.
 */
export function buildOverlay(nodeCount: number, degree: number, prng: Prng): number[][] {
  const adj: Set<number>[] = Array.from({ length: nodeCount }, () => new Set<number>())
  if (nodeCount <= 1) return adj.map(() => [])
  const half = Math.max(1, Math.ceil(degree / 2))
  for (let a = 0; a < nodeCount; a++) {
    for (let k = 0; k < half; k++) {
      let b = prng.int(nodeCount)
      for (let tries = 0; (b === a || adj[a]!.has(b)) && tries < 8; tries++) b = prng.int(nodeCount)
      if (b === a || adj[a]!.has(b)) continue
      adj[a]!.add(b)
      adj[b]!.add(a)
    }
  }
  // A ring through every node keeps the mesh connected whatever the draws were.
  for (let a = 0; a < nodeCount; a++) {
    const b = (a + 1) % nodeCount
    if (a !== b) { adj[a]!.add(b); adj[b]!.add(a) }
  }
  return adj.map((s) => [...s])
}
