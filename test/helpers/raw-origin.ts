import net, { type AddressInfo } from 'node:net'

/**
 * An origin speaking raw bytes: `reply` is written verbatim to every connection, then closed
 * (with a reset instead of a FIN when `reset` is set).
 */
export async function rawOrigin (reply: string, { reset = false } = {}): Promise<{ url: string, seen: string[], close: () => Promise<void> }> {
  const seen: string[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    let text = ''
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1')
      if (!text.includes('\r\n\r\n')) return
      seen.push(text)
      if (reset) socket.write(Buffer.from(reply, 'latin1'), () => socket.resetAndDestroy())
      else socket.end(Buffer.from(reply, 'latin1'))
    })
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
