/**
 * The second tier with undici's SqliteCacheStore, which needs node:sqlite (Node 22.5+): run by
 * npm run test:node-versions on Node 22 and 24, skipped where node:sqlite is missing.
 */
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { cacheStores, request } from 'undici'
import { Peer, type CacheStore } from '../../src/index.js'
import { startOrigin } from '../helpers/origin.js'

function hasSqlite (): boolean {
  try {
    createRequire(import.meta.url)('node:sqlite')
    return true
  } catch {
    return false
  }
}

test(`second tier on undici's SqliteCacheStore (Node ${process.version})`, { skip: hasSqlite() ? false : 'node:sqlite is not available in this Node' }, async () => {
  const origin = await startOrigin()
  const store = new cacheStores.SqliteCacheStore({ location: ':memory:' }) as unknown as CacheStore & { close (): void }
  const first = new Peer({ self: 'http://127.0.0.1:1', store })
  const second = new Peer({ self: 'http://127.0.0.1:1', store })
  try {
    assert.equal(await (await request(`${origin.url}/sqlite`, { dispatcher: first })).body.text(), 'body of /sqlite')
    const deadline = Date.now() + 5000
    while ((await store.get({ origin: origin.url, method: 'GET', path: '/sqlite', headers: {} })) === undefined) {
      if (Date.now() > deadline) throw new Error('not written to the store in 5 s')
      await new Promise((resolve) => setImmediate(resolve))
    }
    const res = await request(`${origin.url}/sqlite`, { dispatcher: second })
    assert.equal(await res.body.text(), 'body of /sqlite')
    assert.match(String(res.headers['cache-status']), /detail=second-tier/)
    assert.equal(origin.count('/sqlite'), 1)
  } finally {
    await Promise.all([first.close(), second.close()])
    store.close()
    await origin.close()
  }
})
