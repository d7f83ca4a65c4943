import { recordedBody } from './store.js'

/**
 * Keeps a copy of a body while it streams past, up to a limit: past it, recording stops and
 * what was kept is dropped (the body still streams on to the caller).
 */
export class BodyRecorder {
  readonly #limit: number
  #chunks: Buffer[] = []
  #recording = false
  /** Bytes seen while recording. */
  bytes = 0

  constructor (limit: number) {
    this.#limit = limit
  }

  get recording (): boolean {
    return this.#recording
  }

  start (): void {
    this.#recording = true
  }

  add (chunk: Buffer): void {
    if (!this.#recording) return
    this.bytes += chunk.length
    if (this.bytes > this.#limit) this.stop()
    else this.#chunks.push(chunk)
  }

  stop (): void {
    this.#recording = false
    this.#chunks = []
  }

  /** The recorded body as it is stored: one Buffer of exactly its length (see recordedBody). */
  body (): Buffer[] {
    return recordedBody(this.#chunks, this.bytes)
  }
}
