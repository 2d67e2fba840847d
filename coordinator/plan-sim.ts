// `POST /v1/plan?simulate=K`: the simulation of a plan runs in a child process (`chorus
// simulate-plan`, JSON on stdin and stdout), off the coordinator's event loop and its core
// loop; one at a time, killed after PLAN_SIMULATION_TIMEOUT_MS.
import { spawn } from 'node:child_process'
import { CHORUS_BIN } from '../cli/paths.js'
import type { PlanProfile, PlanSimulation } from '../protocol/api.js'
import type { JobTemplate } from '../protocol/template.js'

export const PLAN_SIMULATION_TIMEOUT_MS = 120_000
export const MAX_PLAN_SIMULATIONS = 1

export interface PlanSimulationInput {
  template: JobTemplate
  groups: string[][]
  seeds: number
  profile: PlanProfile
}

let running = 0

/** Undefined when a simulation is running already (the caller answers 503). */
export function simulateInChild(input: PlanSimulationInput): Promise<PlanSimulation> | undefined {
  if (running >= MAX_PLAN_SIMULATIONS) return undefined
  running++
  return new Promise<PlanSimulation>((resolve, reject) => {
    const child = spawn(process.execPath, [CHORUS_BIN, 'simulate-plan'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), PLAN_SIMULATION_TIMEOUT_MS)
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      running--
      if (code === 0) return resolve(JSON.parse(out) as PlanSimulation)
      reject(new Error(signal ? `the simulation took over ${PLAN_SIMULATION_TIMEOUT_MS / 1000} s and was stopped` : err.trim().slice(-500) || `the simulation exited with code ${code}`))
    })
    child.stdin.end(JSON.stringify(input))
  })
}
