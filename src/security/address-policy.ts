import dns from 'node:dns'
import net from 'node:net'
import { buildConnector } from 'undici'

/** An origin fetch refused because of where it would connect. */
export class ForbiddenAddressError extends Error {
  /** Always `'ForbiddenAddressError'`. */
  override readonly name = 'ForbiddenAddressError'
  /** Always `'FC_ERR_FORBIDDEN_ADDRESS'`. */
  readonly code = 'FC_ERR_FORBIDDEN_ADDRESS'
  constructor (host: string, address: string) {
    super(`refusing to connect to ${host} (${address}): the address is in a forbidden range`)
  }
}

/** An origin refused by the `origins` allowlist. */
export class ForbiddenOriginError extends Error {
  /** Always `'ForbiddenOriginError'`. */
  override readonly name = 'ForbiddenOriginError'
  /** Always `'FC_ERR_FORBIDDEN_ORIGIN'`. */
  readonly code = 'FC_ERR_FORBIDDEN_ORIGIN'
  constructor (origin: string) {
    super(`origin ${origin} is not in opts.origins`)
  }
}

// Never fetched, whatever the options: link-local (where cloud metadata services live) and
// the metadata addresses that sit outside it.
const ALWAYS_BLOCKED = new net.BlockList()
ALWAYS_BLOCKED.addSubnet('169.254.0.0', 16, 'ipv4')
ALWAYS_BLOCKED.addAddress('100.100.100.200', 'ipv4') // Alibaba Cloud metadata
ALWAYS_BLOCKED.addAddress('192.0.0.192', 'ipv4') // Oracle Cloud metadata
ALWAYS_BLOCKED.addSubnet('fe80::', 10, 'ipv6')
ALWAYS_BLOCKED.addAddress('fd00:ec2::254', 'ipv6') // AWS IMDS over IPv6
ALWAYS_BLOCKED.addAddress('fd00:ec2::23', 'ipv6') // AWS DNS over IPv6

// Blocked with `blockPrivateOrigins`: this machine and the private networks around it, and
// the ranges the Internet never routes (only a network near this one can answer there).
const PRIVATE = new net.BlockList()
PRIVATE.addSubnet('0.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('10.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('100.64.0.0', 10, 'ipv4')
PRIVATE.addSubnet('127.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('172.16.0.0', 12, 'ipv4')
// IETF protocol assignments (RFC 6890): DS-Lite, NAT64 discovery and the like, all local.
PRIVATE.addSubnet('192.0.0.0', 24, 'ipv4')
// Documentation (RFC 5737): never routed, so whatever answers there is a network nearby.
PRIVATE.addSubnet('192.0.2.0', 24, 'ipv4')
PRIVATE.addSubnet('198.51.100.0', 24, 'ipv4')
PRIVATE.addSubnet('203.0.113.0', 24, 'ipv4')
PRIVATE.addSubnet('192.168.0.0', 16, 'ipv4')
PRIVATE.addSubnet('198.18.0.0', 15, 'ipv4')
// Multicast (RFC 5771): no one host to fetch from, only the groups of the local network.
PRIVATE.addSubnet('224.0.0.0', 4, 'ipv4')
// Reserved (RFC 1112 section 4), with the limited broadcast 255.255.255.255 (RFC 919): never
// routed on the Internet, and Linux lets a private network number its hosts in it.
PRIVATE.addSubnet('240.0.0.0', 4, 'ipv4')
PRIVATE.addAddress('::', 'ipv6')
PRIVATE.addAddress('::1', 'ipv6')
// NAT64 local-use prefix (RFC 8215): its translator reaches this network's own IPv4 ranges,
// and the IPv4 address may sit at any RFC 6052 offset, so it cannot be read out and checked.
PRIVATE.addSubnet('64:ff9b:1::', 48, 'ipv6')
// Documentation (RFC 3849): never routed.
PRIVATE.addSubnet('2001:db8::', 32, 'ipv6')
PRIVATE.addSubnet('fc00::', 7, 'ipv6')
// Site-local (deprecated by RFC 3879, still routed inside the sites that use it).
PRIVATE.addSubnet('fec0::', 10, 'ipv6')
// Multicast (RFC 4291 section 2.7): as for IPv4, no one host to fetch from.
PRIVATE.addSubnet('ff00::', 8, 'ipv6')

/**
 * The 16 bytes of an IPv6 address in any spelling net.isIPv6 accepts: `::` anywhere, groups
 * with leading zeros, either case, a dotted IPv4 tail, brackets, a zone (`%eth0`, ignored).
 * Undefined when it is not one.
 */
export function ipv6Bytes (address: string): Uint8Array | undefined {
  let text = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address
  if (!net.isIPv6(text)) return undefined
  const zone = text.indexOf('%')
  if (zone !== -1) text = text.slice(0, zone)
  const gap = text.indexOf('::')
  const head = groupsOf(gap === -1 ? text : text.slice(0, gap))
  const tail = gap === -1 ? [] : groupsOf(text.slice(gap + 2))
  if (head === undefined || tail === undefined || head.length + tail.length > (gap === -1 ? 8 : 7) || (gap === -1 && head.length !== 8)) return undefined
  const bytes = new Uint8Array(16)
  head.forEach((g, i) => { bytes[2 * i] = g >> 8; bytes[2 * i + 1] = g & 255 })
  tail.forEach((g, i) => { const j = 8 - tail.length + i; bytes[2 * j] = g >> 8; bytes[2 * j + 1] = g & 255 })
  return bytes
}

/** The 16-bit groups of one side of `::`; a dotted IPv4 address counts as two. */
function groupsOf (part: string): number[] | undefined {
  if (part === '') return []
  const out: number[] = []
  for (const piece of part.split(':')) {
    if (net.isIPv4(piece)) {
      const [a, b, c, d] = piece.split('.').map(Number) as [number, number, number, number]
      out.push((a << 8) | b, (c << 8) | d)
    } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
      out.push(parseInt(piece, 16))
    } else {
      return undefined
    }
  }
  return out
}

function dotted (bytes: Uint8Array, at: number, mask = 0): string {
  return `${(bytes[at] as number) ^ mask}.${(bytes[at + 1] as number) ^ mask}.${(bytes[at + 2] as number) ^ mask}.${(bytes[at + 3] as number) ^ mask}`
}

function zeros (bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i] !== 0) return false
  return true
}

/** Bytes 0-3 are this prefix (two 16-bit groups). */
function prefixed (bytes: Uint8Array, g0: number, g1: number): boolean {
  return ((bytes[0] as number) << 8 | (bytes[1] as number)) === g0 && ((bytes[2] as number) << 8 | (bytes[3] as number)) === g1
}

/**
 * The IPv4 address of the same host (IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96, NAT64
 * 64:ff9b::/96), or undefined. In any spelling: `0:0:0:0:0:ffff:7f00:1` is `127.0.0.1`.
 */
export function embeddedIPv4 (address: string): string | undefined {
  const bytes = ipv6Bytes(address)
  return bytes === undefined ? undefined : sameHostIPv4(bytes)
}

function sameHostIPv4 (bytes: Uint8Array): string | undefined {
  if (zeros(bytes, 0, 10) && bytes[10] === 0xff && bytes[11] === 0xff) return dotted(bytes, 12)
  // :: and ::1 are IPv6's own unspecified and loopback addresses, not IPv4-compatible ones.
  if (zeros(bytes, 0, 12) && !(zeros(bytes, 12, 15) && (bytes[15] as number) <= 1)) return dotted(bytes, 12)
  if (prefixed(bytes, 0x64, 0xff9b) && zeros(bytes, 4, 12)) return dotted(bytes, 12)
  return undefined
}

/**
 * The IPv4 address a connection to this IPv6 one ends up at, through the stack or through a
 * translator or tunnel on the way, or undefined.
 */
function reachedIPv4 (bytes: Uint8Array): string | undefined {
  const same = sameHostIPv4(bytes)
  if (same !== undefined) return same
  // SIIT IPv4-translated ::ffff:0:0:0/96 (RFC 2765 section 2.1): a translator hands it on.
  if (zeros(bytes, 0, 8) && bytes[8] === 0xff && bytes[9] === 0xff && bytes[10] === 0 && bytes[11] === 0) return dotted(bytes, 12)
  // 6to4 2002::/16 (RFC 3056 section 2): the relay tunnels to the IPv4 address in bits 16-47.
  if (bytes[0] === 0x20 && bytes[1] === 0x02) return dotted(bytes, 2)
  // Teredo 2001:0::/32 (RFC 4380 section 4): the client's IPv4 address, every bit inverted,
  // in the last 32 bits; relays send to it.
  if (prefixed(bytes, 0x2001, 0)) return dotted(bytes, 12, 0xff)
  return undefined
}

function ipv4Forbidden (address: string, blockPrivate: boolean): boolean {
  return ALWAYS_BLOCKED.check(address, 'ipv4') || (blockPrivate && PRIVATE.check(address, 'ipv4'))
}

/**
 * Is a connection to this IP address forbidden? An IPv6 address is read into its bytes, so
 * every spelling of it gets the same answer, and the IPv4 address it reaches (see reachedIPv4)
 * is held to the IPv4 rules as well.
 */
export function addressForbidden (address: string, blockPrivate: boolean): boolean {
  const bare = address.startsWith('[') ? address.slice(1, -1) : address
  if (net.isIPv4(bare)) return ipv4Forbidden(bare, blockPrivate)
  const bytes = ipv6Bytes(bare)
  if (bytes === undefined) return false
  // Eight full groups: one spelling BlockList reads the same way whatever the input was.
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] as number) << 8) | (bytes[i + 1] as number)).toString(16))
  const full = groups.join(':')
  if (ALWAYS_BLOCKED.check(full, 'ipv6') || (blockPrivate && PRIVATE.check(full, 'ipv6'))) return true
  const v4 = reachedIPv4(bytes)
  return v4 !== undefined && ipv4Forbidden(v4, blockPrivate)
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void

/**
 * A `lookup` for net/tls.connect that resolves normally and then refuses forbidden
 * addresses. The check is on the address the socket will actually connect to, so a name
 * that resolves differently at fetch time (DNS rebinding) gains nothing.
 */
export function guardedLookup (blockPrivate: boolean) {
  return function lookup (hostname: string, options: dns.LookupOptions, callback: LookupCallback): void {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err !== null) return callback(err, '')
      const list = addresses as dns.LookupAddress[]
      const bad = list.find((a) => addressForbidden(a.address, blockPrivate))
      if (bad !== undefined) return callback(Object.assign(new ForbiddenAddressError(hostname, bad.address), { errno: undefined }), '')
      if (options.all === true) return callback(null, list)
      const first = list[0]
      if (first === undefined) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '')
      callback(null, first.address, first.family)
    })
  }
}

type Connector = ReturnType<typeof buildConnector>

/**
 * undici's connector with the address policy in front: IP literals are checked before any
 * socket is opened, names through guardedLookup.
 */
export function guardedConnector (options: { timeout: number, blockPrivate: boolean, ca?: unknown }): Connector {
  const base = buildConnector({ timeout: options.timeout, lookup: guardedLookup(options.blockPrivate) } as buildConnector.BuildOptions)
  const connect: Connector = (opts, callback) => {
    const host = opts.hostname.startsWith('[') ? opts.hostname.slice(1, -1) : opts.hostname
    if (net.isIP(host) !== 0 && addressForbidden(host, options.blockPrivate)) {
      queueMicrotask(() => callback(new ForbiddenAddressError(opts.hostname, host), null))
      return
    }
    base(opts, callback)
  }
  return connect
}

/** One entry of opts.origins: a host, host:port, *.suffix, a full origin, or a RegExp over the origin. */
export type OriginRule = string | RegExp

/**
 * A host or host:port rule of opts.origins, spelled as URLs spell hosts: lower case, IDNs in
 * punycode, IPv6 in brackets and compressed. The port, when given, is compared with a URL's
 * effective port, so `example.com:443` matches `https://example.com`. Undefined when the rule
 * is not a host (a path, userinfo, an empty name).
 */
function parseHostRule (rule: string): { hostname: string, port: string | undefined } | undefined {
  let url: URL
  try {
    url = new URL(`http://${rule}`)
  } catch {
    return undefined
  }
  if (url.hostname === '' || url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || rule.endsWith('/')) return undefined
  // new URL drops :80 for http:, which the rule did name.
  const port = url.port !== '' ? url.port : /:\d+$/.test(rule) && !rule.endsWith(']') ? '80' : undefined
  return { hostname: url.hostname, port }
}

function effectivePort (url: URL): string {
  return url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80'
}

/** A string rule of opts.origins, parsed; undefined when it names no origin or host. */
export type ParsedOriginRule =
  | { kind: 'origin', origin: string }
  | { kind: 'suffix', suffix: string }
  | { kind: 'host', hostname: string, port: string | undefined }

export function parseOriginRule (rule: string): ParsedOriginRule | undefined {
  if (rule.includes('://')) {
    let url: URL
    try {
      url = new URL(rule)
    } catch {
      return undefined
    }
    return url.host === '' ? undefined : { kind: 'origin', origin: url.origin }
  }
  if (rule.startsWith('*.')) {
    // A label stands in for the star, so the suffix is spelled as URLs spell hosts.
    const parsed = parseHostRule(`x${rule.slice(1)}`)
    return parsed === undefined ? undefined : { kind: 'suffix', suffix: parsed.hostname.slice(1) }
  }
  const parsed = parseHostRule(rule)
  return parsed === undefined ? undefined : { kind: 'host', ...parsed }
}

/** Compiles opts.origins into a predicate over URLs. */
export function originMatcher (rules: readonly OriginRule[]): (url: URL) => boolean {
  const tests = rules.map((rule): ((url: URL) => boolean) => {
    if (rule instanceof RegExp) {
      // A global or sticky RegExp keeps lastIndex between test() calls and would alternate
      // between matching and not: a copy without those flags answers the same every time.
      const re = rule.global || rule.sticky ? new RegExp(rule.source, rule.flags.replace(/[gy]/g, '')) : rule
      return (url) => re.test(url.origin)
    }
    const parsed = parseOriginRule(rule)
    if (parsed === undefined) return () => false
    if (parsed.kind === 'origin') {
      const { origin } = parsed
      return (url) => url.origin === origin
    }
    if (parsed.kind === 'suffix') {
      const { suffix } = parsed
      return (url) => url.hostname.endsWith(suffix) && url.hostname.length > suffix.length
    }
    const { hostname, port } = parsed
    return port === undefined ? (url) => url.hostname === hostname : (url) => url.hostname === hostname && effectivePort(url) === port
  })
  return (url) => tests.some((t) => t(url))
}
