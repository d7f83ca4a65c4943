/** Upper bounds in seconds, Prometheus' default buckets. */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** A cumulative latency histogram in Prometheus' shape: bucket counts, sum and count. */
export class Histogram {
  readonly buckets: readonly number[]
  readonly counts: number[]
  sum = 0
  count = 0

  constructor (buckets: readonly number[] = DEFAULT_BUCKETS) {
    this.buckets = buckets
    this.counts = new Array<number>(buckets.length).fill(0)
  }

  /** Records one observation, in seconds. */
  observe (seconds: number): void {
    this.sum += seconds
    this.count++
    for (let i = 0; i < this.buckets.length; i++) {
      if (seconds <= (this.buckets[i] as number)) {
        this.counts[i] = (this.counts[i] as number) + 1
        return
      }
    }
  }
}
