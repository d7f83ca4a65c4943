import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Deadline } from '../src/dispatch/deadline.js'

const run = promisify(execFile)

/** Resolves when onExpire runs, with the time it ran; the deadline made with it. */
function expiring (ms: number): { deadline: Deadline, expired: Promise<{ at: number, err: Error }> } {
  let resolve: (v: { at: number, err: Error }) => void = () => {}
  const expired = new Promise<{ at: number, err: Error }>((r) => { resolve = r })
  const deadline = new Deadline(ms, (err) => { resolve({ at: performance.now(), err }) })
  return { deadline, expired }
}

const pause = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

// Lengths no other test in this file uses, so each test has a queue of its own.
describe('Deadline', () => {
  // Deadlines never keep a process alive (their timers are unref'd); here nothing else would.
  let alive: NodeJS.Timeout | undefined
  before(() => { alive = setInterval(() => {}, 1000) })
  after(() => { clearInterval(alive) })

  it('expires once, not before its time, with a headers timeout, and aborts what is attached', { timeout: 10_000 }, async () => {
    const start = performance.now()
    const { deadline, expired } = expiring(30)
    const aborted: Error[] = []
    deadline.attach({ abort: (err: Error) => { aborted.push(err) } } as never)
    assert.equal(deadline.expired, false)
    const { at, err } = await expired
    // One millisecond early at most: libuv counts from its loop's cached time.
    assert.ok(at - start >= 29, `expired after ${at - start} ms`)
    assert.equal((err as { code?: string }).code, 'UND_ERR_HEADERS_TIMEOUT')
    assert.equal(deadline.expired, true)
    assert.deepEqual(aborted, [err])
    // Attached after expiry: aborted at once, with the same error.
    const late: Error[] = []
    deadline.attach({ abort: (e: Error) => { late.push(e) } } as never)
    assert.deepEqual(late, [err])
    deadline.clear() // nothing to clear any more
  })

  it('never expires once cleared', { timeout: 10_000 }, async () => {
    let calls = 0
    const deadline = new Deadline(20, () => { calls++ })
    deadline.clear()
    deadline.clear()
    await pause(60)
    assert.equal(calls, 0)
    assert.equal(deadline.expired, false)
  })

  it('expires those not cleared, in the order they were made, each at its own time', { timeout: 10_000 }, async () => {
    const made: Array<{ n: number, start: number, deadline: Deadline }> = []
    const order: number[] = []
    const late: number[] = []
    for (let n = 0; n < 10; n++) {
      const start = performance.now()
      made.push({ n, start, deadline: new Deadline(301, () => { order.push(n); late.push(performance.now() - start) }) })
      await pause(3)
    }
    // The head, one in the middle and the tail go, long before any is due.
    for (const n of [0, 4, 9]) made[n]?.deadline.clear()
    await pause(301 + 80)
    assert.deepEqual(order, [1, 2, 3, 5, 6, 7, 8])
    for (const ms of late) assert.ok(ms >= 300, `expired ${ms} ms after it was made`)
  })

  it('a deadline made after the head was cleared expires at its own time, not the head\'s', { timeout: 10_000 }, async () => {
    const head = new Deadline(42, () => { assert.fail('cleared') })
    await pause(20)
    head.clear()
    const start = performance.now()
    const { expired } = expiring(42)
    const { at } = await expired
    // The timer was set for the head, 20 ms earlier: it is set again for this one.
    assert.ok(at - start >= 41, `expired after ${at - start} ms`)
  })

  it('deadlines of different lengths are independent', { timeout: 10_000 }, async () => {
    const order: string[] = []
    const long = new Deadline(400, () => { order.push('400') })
    const short = new Deadline(21, () => { order.push('21') })
    await pause(100)
    assert.deepEqual(order, ['21'])
    long.clear()
    short.clear()
  })

  it('a deadline made by an expiry gets its whole length', { timeout: 10_000 }, async () => {
    const start = performance.now()
    let second: Promise<{ at: number }> | undefined
    await new Promise<void>((resolve) => {
      void new Deadline(23, () => {
        second = expiring(23).expired
        resolve()
      })
    })
    const { at } = await (second as Promise<{ at: number }>)
    assert.ok(at - start >= 45, `the second expired ${at - start} ms after the first was made`)
  })

  it('sets a timer about once per length of deadline, not once per deadline', { timeout: 10_000 }, async () => {
    const real = globalThis.setTimeout
    let set = 0
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => { set++; return real(...args) }) as typeof setTimeout
    try {
      // Requests one after another: each deadline is made, then cleared when its answer starts.
      for (let i = 0; i < 200; i++) new Deadline(5000 + 17, () => {}).clear()
    } finally {
      globalThis.setTimeout = real
    }
    assert.equal(set, 1)
  })

  it('a handler that throws from its expiry leaves the deadlines behind it their timer', { timeout: 10_000 }, async () => {
    // In a process of its own: the throw reaches the process, as it always did.
    const module = fileURLToPath(new URL('../src/dispatch/deadline.js', import.meta.url))
    const code = `
      const { Deadline } = await import(${JSON.stringify(module)})
      const thrown = []
      const alive = setInterval(() => {}, 1000)
      process.on('uncaughtException', (err) => { thrown.push(err.message) })
      new Deadline(20, () => { throw new Error('handler threw') })
      await new Promise((resolve) => setTimeout(resolve, 5))
      const after = await new Promise((resolve) => { new Deadline(20, () => resolve('expired')) })
      console.log(JSON.stringify({ thrown, after }))
      clearInterval(alive)
    `
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', code], { timeout: 10_000 })
    assert.deepEqual(JSON.parse(stdout), { thrown: ['handler threw'], after: 'expired' })
  })
})
