import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CallerController } from '../src/dispatch/controller.js'
import { InFlight } from '../src/dispatch/in-flight.js'

describe('InFlight', () => {
  it('adds and removes in any order, once each, and lists what is left', () => {
    const list = new InFlight()
    const [a, b, c, d] = [new CallerController(), new CallerController(), new CallerController(), new CallerController()]
    for (const ctl of [a, b, c, d]) list.add(ctl)
    list.add(b) // a second add of a listed controller changes nothing
    assert.equal(list.size, 4)
    assert.deepEqual(list.toArray(), [d, c, b, a])
    assert.equal(list.delete(b), true) // middle
    assert.equal(list.delete(b), false)
    assert.equal(list.delete(d), true) // head
    assert.equal(list.delete(a), true) // tail
    assert.deepEqual(list.toArray(), [c])
    assert.equal(list.size, 1)
    // A removed controller keeps no links, so a finished request points at nothing.
    assert.equal(b.inFlightPrev, null)
    assert.equal(b.inFlightNext, null)
    assert.equal(list.delete(null), false)
    assert.equal(list.delete(c), true)
    assert.equal(list.size, 0)
    assert.deepEqual(list.toArray(), [])
  })

  it('never removes a controller listed on another list', () => {
    const one = new InFlight()
    const two = new InFlight()
    const ctl = new CallerController()
    one.add(ctl)
    assert.equal(two.delete(ctl), false)
    assert.equal(one.size, 1)
    two.add(ctl) // already on a list: left there
    assert.equal(two.size, 0)
    assert.equal(one.delete(ctl), true)
  })
})
