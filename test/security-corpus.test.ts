import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { rawExchange, rawRequest, startPeers, type MountedPeer, type RawOutcome } from './helpers/hostile.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

// A raw-socket corpus of malformed requests against handler()'s server. Each must get a 4xx
// (or 508 for a loop) or a closed connection, never a hang, never a crash, and nothing may be
// fetched for it: every case targets /corpus-<i> on a counting origin. After each case, a
// valid request on a new connection must still be served. The server runs in this process,
// so a crash fails the whole file.

let origin: CountingOrigin
const peers: MountedPeer[] = []

before(async () => {
  origin = await startOrigin()
  // One handler without a secret (loopback callers get in: the whole request path runs) and
  // one with a secret (the signature check runs first).
  peers.push(...await startPeers([{}]))
  peers.push(...await startPeers([{ secret: 'corpus secret corpus secret' }]))
})

after(async () => {
  await Promise.all(peers.map((p) => p.close()))
  await origin.close()
})

type Case = [name: string, bytes: (q: string) => string | Buffer]

const H = 'Host: 127.0.0.1\r\n'
const get = (q: string, headers = '', body = ''): string => `GET ${q} HTTP/1.1\r\n${H}${headers}\r\n${body}`

const CORPUS: Case[] = [
  // Framing: Content-Length and Transfer-Encoding
  ['two different Content-Length values', (q) => get(q, 'Content-Length: 0\r\nContent-Length: 5\r\n', 'hello')],
  ['two equal non-zero Content-Length values', (q) => get(q, 'Content-Length: 5\r\nContent-Length: 5\r\n', 'hello')],
  ['Content-Length as a list', (q) => get(q, 'Content-Length: 5, 5\r\n', 'hello')],
  ['Content-Length with Transfer-Encoding', (q) => get(q, 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n')],
  ['Transfer-Encoding with Content-Length (other order)', (q) => get(q, 'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', '0\r\n\r\n')],
  ['a chunked GET body', (q) => get(q, 'Transfer-Encoding: chunked\r\n', '5\r\nhello\r\n0\r\n\r\n')],
  ['a non-hex chunk size', (q) => get(q, 'Transfer-Encoding: chunked\r\n', 'zz\r\nhello\r\n0\r\n\r\n')],
  ['an overflowing chunk size', (q) => get(q, 'Transfer-Encoding: chunked\r\n', 'fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n')],
  ['a negative chunk size', (q) => get(q, 'Transfer-Encoding: chunked\r\n', '-1\r\nhello\r\n0\r\n\r\n')],
  ['a NUL in a chunk extension', (q) => get(q, 'Transfer-Encoding: chunked\r\n', '5;\0\r\nhello\r\n0\r\n\r\n')],
  ['a chunked trailer', (q) => get(q, 'Transfer-Encoding: chunked\r\n', '0\r\nX-Injected: 1\r\n\r\n')],
  ['chunked not the last transfer coding', (q) => get(q, 'Transfer-Encoding: chunked, gzip\r\n', '0\r\n\r\n')],
  ['a transfer coding without chunked', (q) => get(q, 'Transfer-Encoding: gzip\r\n', 'hello')],
  ['Transfer-Encoding repeated', (q) => get(q, 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n')],
  ['whitespace before the colon of Transfer-Encoding', (q) => get(q, 'Transfer-Encoding : chunked\r\n', '0\r\n\r\n')],
  ['an unknown transfer coding xchunked', (q) => get(q, 'Transfer-Encoding: xchunked\r\n', '0\r\n\r\n')],
  ['a negative Content-Length', (q) => get(q, 'Content-Length: -1\r\n')],
  ['a non-numeric Content-Length', (q) => get(q, 'Content-Length: abc\r\n')],
  ['Content-Length in exponent form', (q) => get(q, 'Content-Length: 1e3\r\n')],
  ['an overflowing Content-Length', (q) => get(q, 'Content-Length: 99999999999999999999999\r\n')],
  ['a GET with a body', (q) => get(q, 'Content-Length: 5\r\n', 'hello')],
  ['a HEAD with a body', (q) => `HEAD ${q} HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`],
  ['a GET with Expect: 100-continue and a body', (q) => get(q, 'Expect: 100-continue\r\nContent-Length: 5\r\n', 'hello')],
  // Size
  ['a 20 KiB header', (q) => get(q, `X-Big: ${'a'.repeat(20 * 1024)}\r\n`)],
  ['a 20 KiB request target (huge q)', (q) => get(q + encodeURIComponent('/' + 'a'.repeat(20 * 1024)))],
  // Line endings and control characters
  ['bare LF line endings throughout', (q) => `GET ${q} HTTP/1.1\nHost: 127.0.0.1\n\n`],
  ['a bare LF after the request line', (q) => `GET ${q} HTTP/1.1\n${H}\r\n`],
  ['a bare CR inside a header value', (q) => get(q, 'X-A: one\rtwo\r\n')],
  ['a NUL in a header value', (q) => get(q, 'X-A: one\0two\r\n')],
  ['a NUL in a header name', (q) => get(q, 'X-\0A: one\r\n')],
  ['a NUL in the request target', (q) => `GET ${q}\0 HTTP/1.1\r\n${H}\r\n`],
  ['a space in the request target', (q) => `GET ${q} extra HTTP/1.1\r\n${H}\r\n`],
  ['a header line without a colon', (q) => get(q, 'NoColonHere\r\n')],
  ['a space inside a header name', (q) => get(q, 'X A: one\r\n')],
  ['an obs-fold continuation line', (q) => get(q, 'X-A: one\r\n two\r\n')],
  ['a header line starting with whitespace', (q) => `GET ${q} HTTP/1.1\r\n Host: 127.0.0.1\r\n\r\n`],
  // Methods, targets, versions
  ['an invalid method token', (q) => `G@T ${q} HTTP/1.1\r\n${H}\r\n`],
  ['an unknown method', (q) => `FOO ${q} HTTP/1.1\r\n${H}\r\n`],
  ['a lower-case method', (q) => `get ${q} HTTP/1.1\r\n${H}\r\n`],
  ['POST', (q) => `POST ${q} HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`],
  ['PUT', (q) => `PUT ${q} HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`],
  ['PATCH', (q) => `PATCH ${q} HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`],
  ['CONNECT', () => `CONNECT 127.0.0.1:80 HTTP/1.1\r\n${H}\r\n`],
  ['OPTIONS *', () => `OPTIONS * HTTP/1.1\r\n${H}\r\n`],
  ['TRACE', (q) => `TRACE ${q} HTTP/1.1\r\n${H}\r\n`],
  ['an absolute-form target naming this server', (q) => `GET http://127.0.0.1${q} HTTP/1.1\r\n${H}\r\n`],
  ['an absolute-form target naming another host', (q) => `GET http://evil.example${q} HTTP/1.1\r\nHost: evil.example\r\n\r\n`],
  ['a target without a leading slash', (q) => `GET ${q.slice(1)} HTTP/1.1\r\n${H}\r\n`],
  ['HTTP/9.9', (q) => `GET ${q} HTTP/9.9\r\n${H}\r\n`],
  ['a lower-case version', (q) => `GET ${q} http/1.1\r\n${H}\r\n`],
  ['HTTP/1.1 without Host', (q) => `GET ${q} HTTP/1.1\r\n\r\n`],
  // The wire protocol's own checks
  ['no q', () => get('/proxy')],
  ['an empty q', () => get('/proxy?q=')],
  ['a q that is not a URL', () => get('/proxy?q=not%20a%20url')],
  ['a q with invalid percent-encoding', (q) => get('/proxy?q=%ZZ' + q.slice('/proxy?q='.length))],
  ['a q that is a lone %', () => get('/proxy?q=%')],
  ['a q that is %00', () => get('/proxy?q=%00')],
  ['a q with invalid UTF-8 in the host', () => get('/proxy?q=http%3A%2F%2F%E0%A4%A')],
  ['a q with a file: URL', () => get('/proxy?q=' + encodeURIComponent('file:///etc/passwd'))],
  ['a q with an ftp: URL', () => get('/proxy?q=' + encodeURIComponent('ftp://127.0.0.1/x'))],
  ['a q with a javascript: URL', () => get('/proxy?q=' + encodeURIComponent('javascript:alert(1)'))],
  ['a q with userinfo', (q) => get(q.replace('http%3A%2F%2F', 'http%3A%2F%2Fuser%3Apass%40'))],
  ['Connection: host', (q) => get(q, 'Connection: host\r\n')],
  ['Connection: content-length', (q) => get(q, 'Connection: content-length\r\n')],
  ['Connection: authorization', (q) => get(q, 'Authorization: Bearer x\r\nConnection: authorization\r\n')],
  ['two forwardcache hops in Via', (q) => get(q, 'Via: 1.1 forwardcache, 1.1 forwardcache\r\n')],
  ['another path than /proxy', (q) => get(q.replace('/proxy', '/admin'))],
  ['the path with a trailing slash', (q) => get(q.replace('/proxy', '/proxy/'))],
  ['the path with dot segments', (q) => get(q.replace('/proxy', '/x/../proxy'))],
  ['the path percent-encoded', (q) => get(q.replace('/proxy', '/%70roxy'))]
]

/**
 * Requests Node's own HTTP parser accepts, so handler() never sees anything wrong with them:
 * they are served as the ordinary GET they amount to. Recorded so that a change in Node (or
 * a stricter handler) shows up here.
 */
const NODE_TOLERATED: Case[] = [
  // llhttp treats a request line without a version as HTTP/0.9 and Node answers it.
  ['no HTTP version (0.9 style)', (q) => `GET ${q}\r\n\r\n`],
  // RFC 9112 section 3.2 says 400; Node keeps the first. handler() ignores Host anyway: the
  // target comes from q alone.
  ['two Host headers', (q) => `GET ${q} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n`],
  // About 24 KiB of headers: Node keeps the first ones (maxHeadersCount) and drops the rest
  // without a 431, so what reaches handler() is under its 16 KiB budget.
  ['2,000 small headers', (q) => get(q, Array.from({ length: 2000 }, (_, i) => `X-H${i}: v\r\n`).join(''))]
]

function refused (o: RawOutcome): boolean {
  if (o.kind === 'closed') return true
  if (o.kind === 'hung') return false
  return (o.status >= 400 && o.status < 500) || o.status === 508
}

const describeOutcome = (o: RawOutcome): string => o.kind === 'response' ? String(o.status) : o.kind

for (const [config, index] of [['without a secret', 0], ['with a secret', 1]] as const) {
  describe(`raw corpus against handler() ${config}`, () => {
    const tally = new Map<string, number>()
    let port = 0
    before(() => { port = Number(new URL((peers[index] as MountedPeer).url).port) })

    test(`the corpus has at least 40 cases (${CORPUS.length})`, () => {
      assert.ok(CORPUS.length >= 40)
    })

    CORPUS.forEach(([name, make], i) => {
      test(`${name}: refused, nothing fetched, the server still serves`, async () => {
        const path = `/corpus-${index}-${i}`
        const q = `/proxy?q=${encodeURIComponent(origin.url + path)}`
        const outcome = await rawRequest(port, make(q), { head: name.startsWith('a HEAD') })
        tally.set(describeOutcome(outcome), (tally.get(describeOutcome(outcome)) ?? 0) + 1)
        assert.ok(refused(outcome), `got ${outcome.kind === 'response' ? outcome.head : outcome.kind}`)
        assert.equal(origin.count(path), 0)
        const ok = await rawRequest(port, `GET /proxy?q=${encodeURIComponent(origin.url + '/alive')} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)
        assert.ok(ok.kind === 'response' && (ok.status === 200 || ok.status === 401), `follow-up got ${describeOutcome(ok)}`)
      })
    })

    NODE_TOLERATED.forEach(([name, make], i) => {
      test(`tolerated by Node's parser: ${name}: served as an ordinary GET, the server still serves`, async () => {
        const path = `/tolerated-${index}-${i}`
        const outcome = await rawRequest(port, make(`/proxy?q=${encodeURIComponent(origin.url + path)}`))
        assert.ok(outcome.kind === 'response', describeOutcome(outcome))
        assert.ok([200, 401].includes(outcome.status), outcome.head)
        if (outcome.status === 200) assert.equal(outcome.body, `body of ${path}`)
        assert.ok(origin.count(path) <= 1)
        const ok = await rawRequest(port, `GET /proxy?q=${encodeURIComponent(origin.url + '/alive')} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)
        assert.ok(ok.kind === 'response')
      })
    })

    test('no smuggled request: a body that looks like a request is never parsed as one', async () => {
      const smuggled = `GET /proxy?q=${encodeURIComponent(origin.url + `/smuggled-${index}`)} HTTP/1.1\r\n${H}\r\n`
      const sentinel = `GET /proxy?q=${encodeURIComponent(origin.url + '/alive')} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`
      const q = `/proxy?q=${encodeURIComponent(origin.url + `/front-${index}`)}`
      const payloads = [
        get(q, `Content-Length: ${Buffer.byteLength(smuggled)}\r\n`, smuggled) + sentinel,
        get(q, 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n' + smuggled) + sentinel,
        get(q, 'Transfer-Encoding: chunked\r\n', `${Buffer.byteLength(smuggled).toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`) + sentinel
      ]
      for (const payload of payloads) {
        const all = await rawExchange(port, payload, { max: 5 })
        const statuses = all.map(describeOutcome)
        assert.ok(all.length >= 1 && refused(all[0] as RawOutcome), statuses.join(','))
        // At most the refusal and the sentinel: never a third response for the smuggled request.
        assert.ok(all.filter((o) => o.kind === 'response').length <= 2, statuses.join(','))
      }
      assert.equal(origin.count(`/smuggled-${index}`), 0)
      assert.equal(origin.count(`/front-${index}`), 0)
    })

    test('outcome tally', (t) => {
      t.diagnostic(`${config}: ${CORPUS.length} cases -> ${JSON.stringify(Object.fromEntries([...tally].sort()))}`)
      assert.equal([...tally.values()].reduce((x, y) => x + y, 0), CORPUS.length)
      assert.equal(tally.get('hung') ?? 0, 0)
    })
  })
}
