import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import dns from 'node:dns'
import { test } from 'node:test'
import { DnsDiscovery, Peer, type DnsResolver } from '../src/index.js'

function stubResolver (answers: Array<string[] | Error>): DnsResolver & { calls: number } {
  const r = {
    calls: 0,
    async resolve4 (): Promise<string[]> {
      const a = answers[Math.min(r.calls++, answers.length - 1)] as string[] | Error
      if (a instanceof Error) throw a
      return a
    },
    async resolve6 (): Promise<string[]> {
      throw Object.assign(new Error('no AAAA'), { code: 'ENODATA' })
    },
    async resolveSrv (): Promise<dns.SrvRecord[]> {
      return [{ name: 'peer-a.example', port: 3000, priority: 0, weight: 0 }, { name: 'peer-b.example.', port: 3001, priority: 0, weight: 0 }]
    }
  }
  return r
}

test('DNS discovery follows A records, keeps the pool through failures and empty answers', async () => {
  const self = 'http://10.0.0.1:3000'
  const peer = new Peer({ self })
  const errors: Error[] = []
  const resolver = stubResolver([
    ['10.0.0.1', '10.0.0.2'],
    Object.assign(new Error('SERVFAIL'), { code: 'ESERVFAIL' }),
    [],
    ['10.0.0.2', '10.0.0.3', '10.0.0.1']
  ])
  const discovery = new DnsDiscovery(peer, { name: 'cache.default.svc.cluster.local', port: 3000, resolver, interval: 3_600_000, onError: (e) => errors.push(e) })
  try {
    assert.deepEqual(await discovery.start(), ['http://10.0.0.1:3000', 'http://10.0.0.2:3000'])
    await discovery.refresh() // SERVFAIL: no change
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://10.0.0.2:3000'])
    await discovery.refresh() // empty: no change
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://10.0.0.2:3000'])
    assert.equal(errors.length, 2)
    await discovery.refresh()
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://10.0.0.2:3000', 'http://10.0.0.3:3000'])
  } finally {
    discovery.stop()
    await peer.close()
  }
})

test('DNS discovery adds self until DNS lists it, and reads SRV targets and ports', async () => {
  const self = 'http://10.0.0.9:3000'
  const peer = new Peer({ self })
  const a = new DnsDiscovery(peer, { name: 'x', port: 3000, resolver: stubResolver([['10.0.0.1']]) })
  const srvPeer = new Peer({ self: 'http://peer-a.example:3000' })
  const s = new DnsDiscovery(srvPeer, { name: '_http._tcp.cache.service.consul', srv: true, resolver: stubResolver([[]]) })
  try {
    assert.deepEqual(await a.start(), ['http://10.0.0.1:3000', self])
    assert.deepEqual(await s.start(), ['http://peer-a.example:3000', 'http://peer-b.example:3001'])
  } finally {
    a.stop()
    s.stop()
    await Promise.all([peer.close(), srvPeer.close()])
  }
})

/** A DNS server on loopback answering A queries for one name (RFC 1035 wire format). */
async function startDnsServer (name: string, addresses: () => string[]): Promise<{ address: string, close: () => Promise<void> }> {
  const socket = dgram.createSocket('udp4')
  socket.on('message', (query, rinfo) => {
    let offset = 12
    const labels: string[] = []
    while (query[offset] !== 0 && offset < query.length) {
      const len = query[offset] as number
      labels.push(query.subarray(offset + 1, offset + 1 + len).toString('ascii'))
      offset += len + 1
    }
    offset += 1
    const qtype = query.readUInt16BE(offset)
    const question = query.subarray(12, offset + 4)
    const answers = qtype === 1 && labels.join('.').toLowerCase() === name ? addresses() : []
    const header = Buffer.alloc(12)
    header.writeUInt16BE(query.readUInt16BE(0), 0)
    header.writeUInt16BE(0x8180, 2)
    header.writeUInt16BE(1, 4)
    header.writeUInt16BE(answers.length, 6)
    const records = answers.map((ip) => {
      const rr = Buffer.alloc(16)
      rr.writeUInt16BE(0xc00c, 0)
      rr.writeUInt16BE(1, 2)
      rr.writeUInt16BE(1, 4)
      rr.writeUInt32BE(5, 6)
      rr.writeUInt16BE(4, 10)
      ip.split('.').forEach((octet, i) => rr.writeUInt8(Number(octet), 12 + i))
      return rr
    })
    socket.send(Buffer.concat([header, question, ...records]), rinfo.port, rinfo.address)
  })
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  return {
    address: `127.0.0.1:${socket.address().port}`,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve()))
  }
}

test('DNS discovery against a real DNS server on loopback', async () => {
  let answer = ['127.0.0.2', '127.0.0.3']
  const server = await startDnsServer('cache.test', () => answer)
  const resolver = new dns.promises.Resolver({ timeout: 500, tries: 1 })
  resolver.setServers([server.address])
  const peer = new Peer({ self: 'http://127.0.0.2:4000' })
  const discovery = new DnsDiscovery(peer, { name: 'cache.test', port: 4000, resolver })
  try {
    assert.deepEqual(await discovery.start(), ['http://127.0.0.2:4000', 'http://127.0.0.3:4000'])
    answer = ['127.0.0.2', '127.0.0.3', '127.0.0.4']
    await discovery.refresh()
    assert.deepEqual(peer.peers, ['http://127.0.0.2:4000', 'http://127.0.0.3:4000', 'http://127.0.0.4:4000'])
  } finally {
    discovery.stop()
    await peer.close()
    await server.close()
  }
})

test('DNS discovery keeps the pool when one address family fails for a reason other than having no records', async () => {
  const peer = new Peer({ self: 'http://10.0.0.1:3000' })
  const errors: Error[] = []
  let v4: string[] | Error = ['10.0.0.1', '10.0.0.2']
  const resolver: DnsResolver = {
    resolve4: async () => { if (v4 instanceof Error) throw v4; return v4 },
    resolve6: async () => ['fd00::1', 'fd00::2'],
    resolveSrv: async () => []
  }
  const discovery = new DnsDiscovery(peer, { name: 'x', port: 3000, resolver, interval: 3_600_000, onError: (e) => { errors.push(e); throw new Error('a careless onError') } })
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  try {
    await discovery.start()
    assert.equal(peer.peers.length, 4)
    v4 = Object.assign(new Error('queryA ETIMEOUT x'), { code: 'ETIMEOUT' })
    await discovery.refresh()
    assert.equal(peer.peers.length, 4, 'not shrunk to the IPv6 half')
    assert.match(errors[0]?.message ?? '', /ETIMEOUT/)
    v4 = Object.assign(new Error('queryA ENODATA x'), { code: 'ENODATA' })
    await discovery.refresh()
    assert.deepEqual(peer.peers, ['http://10.0.0.1:3000', 'http://[fd00::1]:3000', 'http://[fd00::2]:3000'])
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(unhandled, [])
  } finally {
    process.off('unhandledRejection', onUnhandled)
    discovery.stop()
    await peer.close()
  }
})
