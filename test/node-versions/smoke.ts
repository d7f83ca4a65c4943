/**
 * Node's built-in fetch through a cluster, run by other Node versions' binaries
 * (npm run test:node-versions): their bundled undici differs (6 in Node 20, 7 in 22 and 24).
 */
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { setGlobalDispatcher } from 'undici'
import { Peer } from '../../src/index.js'
import { startOrigin } from '../helpers/origin.js'

test(`built-in fetch through setGlobalDispatcher(peer) on Node ${process.version}`, async () => {
  const origin = await startOrigin()
  const servers = await Promise.all([0, 1, 2].map(async () => {
    const s = http.createServer()
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
    return s
  }))
  const urls = servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`)
  const peers = urls.map((self, i) => {
    const p = new Peer({ self, peers: urls })
    servers[i]?.on('request', p.handler())
    return p
  })
  try {
    setGlobalDispatcher(peers[0] as Peer)
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 12; i++) {
        const res = await fetch(`${origin.url}/v-${i}`)
        assert.equal(res.status, 200)
        assert.equal(await res.text(), `body of /v-${i}`)
        const head = await fetch(`${origin.url}/v-${i}`, { method: 'HEAD' })
        assert.equal(head.status, 200)
      }
    }
    for (let i = 0; i < 12; i++) assert.equal(origin.count(`/v-${i}`), 1)
    const forwards = peers.reduce((n, p) => n + p.stats().forwards, 0)
    assert.ok(forwards > 0, 'some URLs belong to other peers')
  } finally {
    await Promise.all(peers.map((p) => p.close()))
    for (const s of servers) s.close()
    await origin.close()
  }
})
