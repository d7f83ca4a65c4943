import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FlightTable } from '../src/dispatch/flight-table.js'

describe('FlightTable', () => {
  it('holds, finds and drops flights by key, counting only those in progress', () => {
    const t = new FlightTable<{ n: number }>()
    const a = { n: 1 }
    const b = { n: 2 }
    assert.equal(t.get('a'), undefined)
    assert.equal(t.has('a'), false)
    t.set('a', a)
    t.set('b', b)
    t.set('a', a) // again: still one flight
    assert.equal(t.size, 2)
    assert.equal(t.get('a'), a)
    assert.equal(t.has('b'), true)
    t.delete('a')
    t.delete('a') // twice: nothing more
    t.delete('nobody')
    assert.equal(t.size, 1)
    assert.equal(t.get('a'), undefined)
    assert.equal(t.has('a'), false)
    const a2 = { n: 3 }
    t.set('a', a2)
    assert.equal(t.get('a'), a2)
    assert.equal(t.size, 2)
  })

  it('keeps a key whose flight ended for the next flight of it, instead of deleting it', () => {
    const t = new FlightTable<object>()
    for (let i = 0; i < 100; i++) {
      t.set('GET http://origin/x', {})
      t.delete('GET http://origin/x')
    }
    // One key held throughout: the table neither empties nor refills request by request.
    assert.equal(t.held, 1)
    assert.equal(t.size, 0)
  })

  it('does not keep a key longer than an ordinary URL once its flight has ended', () => {
    const t = new FlightTable<object>()
    const long = `GET http://origin/${'x'.repeat(1 << 20)}`
    t.set(long, {})
    assert.equal(t.held, 1)
    t.delete(long)
    assert.equal(t.held, 0)
    assert.equal(t.size, 0)
  })

  it('drops emptied keys past a bound, and keeps the flights in progress', () => {
    const t = new FlightTable<{ k: string }>()
    const live = ['l0', 'l1', 'l2'].map((k) => ({ k }))
    for (const v of live) t.set(v.k, v)
    for (let i = 0; i < 5000; i++) {
      t.set(`u${i}`, { k: `u${i}` })
      t.delete(`u${i}`)
      assert.ok(t.held <= 3 + 1025, `held ${t.held} keys after ${i + 1} flights`)
    }
    assert.equal(t.size, 3)
    for (const v of live) assert.equal(t.get(v.k), v)
    for (const v of live) t.delete(v.k)
    assert.equal(t.size, 0)
    // With nothing in flight, emptied keys past the bound go all at once.
    for (let i = 0; i < 2000; i++) {
      t.set(`w${i}`, { k: '' })
      t.delete(`w${i}`)
    }
    assert.ok(t.held <= 1025, `held ${t.held}`)
  })
})
