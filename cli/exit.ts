// One exit-code scheme for every command (README "Exit codes", `chorus --help`).
export const EXIT = {
  /** done, and it succeeded */
  ok: 0,
  /** the job or instance failed */
  failed: 1,
  /** usage or validation error */
  usage: 2,
  /** the coordinator cannot be reached, or refused the request (auth, conflict, overload) */
  unreachable: 3,
  /** not found */
  notFound: 4,
} as const

export const EXIT_HELP = `Exit codes: 0 done and succeeded, 1 the job or instance failed, 2 usage or validation error,
3 the coordinator cannot be reached or refused the request (auth), 4 not found.`

/** The exit code for an API answer that is not a success (status 0: no answer from a Chorus API). */
export function exitForStatus(status: number): number {
  if (status === 404) return EXIT.notFound
  if (status === 400 || status === 422) return EXIT.usage
  return EXIT.unreachable
}

/** The exit code of an error thrown by a command (an ApiError carries its HTTP status). */
export function exitForError(err: unknown): number {
  const status = (err as { status?: unknown }).status
  if ((err as Error).name === 'ApiError' && typeof status === 'number') return exitForStatus(status)
  return EXIT.failed
}

/** Exit 1 when an instance failed (failure, quorum_failed); excluded and canceled ones did not fail. */
export function exitForInstances(instances: readonly { status: string }[]): number {
  return instances.some((i) => FAILED.includes(i.status)) ? EXIT.failed : EXIT.ok
}

/** The statuses of an instance that failed. */
const FAILED = ['failure', 'quorum_failed']

/**
 * The exit code of a report. A job's report shows one page of its instances, so a job's code
 * comes from its counts over all of them (a failed instance past the first page still fails it);
 * an instance's report, from that instance.
 */
export function exitForReport(report: { job: { id: string; instances?: { byStatus: Record<string, number> } }; instances: readonly { status: string }[] }, id: string): number {
  const counts = report.job.id === id ? report.job.instances?.byStatus : undefined
  if (!counts) return exitForInstances(report.instances)
  return FAILED.some((s) => (counts[s] ?? 0) > 0) ? EXIT.failed : EXIT.ok
}
