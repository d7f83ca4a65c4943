import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { cacheKeyOf, normaliseOriginUrl } from '../src/url.js'

test('cacheKeyOf gives exactly the normalised URL, fast path or not (property)', () => {
  const hostChars = fc.constantFrom(...'abcxyzABC0123456789.-x'.split(''))
  const pathChars = fc.constantFrom(...'aZ09-._~!$&\'()*+,;=:@/%2eE?#[] "<>`{}\\^|'.split(''))
  fc.assert(fc.property(
    fc.constantFrom('http', 'https', 'HTTP'),
    fc.string({ unit: hostChars, minLength: 1, maxLength: 12 }),
    fc.option(fc.constantFrom('80', '443', '8080', '08', '0', '1', '65535', '65536', '99999', '123456', ''), { nil: undefined }),
    fc.string({ unit: pathChars, maxLength: 20 }),
    (scheme, host, port, path) => {
      const input = `${scheme}://${host}${port === undefined ? '' : `:${port}`}/${path}`
      let slow: string
      try {
        slow = normaliseOriginUrl(input).href
      } catch {
        assert.throws(() => cacheKeyOf(input))
        return
      }
      assert.equal(cacheKeyOf(input), slow, input)
    }
  ), { numRuns: 20_000 })
})

test('cacheKeyOf reads numeric hosts as WHATWG URL does', () => {
  for (const input of ['http://0x7f.1/x', 'http://127.1/x', 'http://2130706433/x', 'http://127.000.0.1/x', 'http://10.0.0.1/x', 'http://1.2.3.4.5/x']) {
    let slow: string | Error
    try { slow = normaliseOriginUrl(input).href } catch (e) { slow = e as Error }
    if (slow instanceof Error) assert.throws(() => cacheKeyOf(input), input)
    else assert.equal(cacheKeyOf(input), slow, input)
  }
})
