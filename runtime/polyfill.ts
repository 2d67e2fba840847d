// Node 20 lacks Promise.withResolvers, which several libp2p modules call (see
// ../shared/notes/libp2p-on-node20.md). Import this module before anything that loads libp2p.
if (typeof (Promise as any).withResolvers !== 'function') {
  ;(Promise as any).withResolvers = function withResolvers<T>() {
    let resolve!: (value: T | PromiseLike<T>) => void
    let reject!: (reason?: unknown) => void
    const promise = new Promise<T>((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}
export {}
