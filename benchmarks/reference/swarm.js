#!/usr/bin/env node
'use strict'
// The Node.js side of the many-nodes scenario of benchmarks/suite.py (the
// same steps as benchmarks/swarm.py, on hyperdht@1.3.0):
//
//   node swarm.js '{"nodes": N, "announces": A, "lookups": L, "idle": S,
//                   "batch": B, "seed": X}'
//
// One bootstrap node, then N nodes on 127.0.0.1 joining through it, B at a
// time (each batch waits for its nodes' first bootstrap); A nodes announce
// sha256(their id), one after the other; L sequential lookups of those keys
// from other nodes; then S seconds idle. Prints one JSON line and exits.

process.noDeprecation = true // the reference uses new Buffer()

var crypto = require('crypto')
var dgram = require('dgram')
var hyperdht = require('hyperdht')

var opts = JSON.parse(process.argv[2] || '{}')
var N = opts.nodes || 100
var A = opts.announces || 50
var L = opts.lookups || 50
var IDLE = opts.idle || 0
var BATCH = opts.batch || 50

// A small seeded PRNG (mulberry32) so the lookup origins are reproducible.
var seed = (opts.seed || 1) >>> 0
function rand () {
  seed = (seed + 0x6d2b79f5) >>> 0
  var t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

function now () {
  return Number(process.hrtime.bigint()) / 1e9
}

function make (bootstrap, cb) {
  var socket = dgram.createSocket('udp4')
  socket.bind(0, '127.0.0.1') // before hyperdht's nextTick bootstrap sends
  var o = { socket: socket }
  if (bootstrap) o.bootstrap = [bootstrap]
  var node = hyperdht(o)
  node.on('error', function () {})
  node.dht.socket.on('warning', function () {})
  node.dht.socket.on('error', function () {})
  socket.on('listening', function () { cb(node) })
}

function quantile (xs, q) {
  if (!xs.length) return null
  var s = xs.slice().sort(function (a, b) { return a - b })
  var pos = (s.length - 1) * q
  var lo = Math.floor(pos)
  var hi = Math.ceil(pos)
  return s[lo] + (s[hi] - s[lo]) * (pos - lo)
}

var out = { impl: 'reference', nodes: N }
var nodes = []

make(null, function (boot) {
  var bootAddr = '127.0.0.1:' + boot.address().port
  var t0 = now()
  var ready = 0
  var failed = 0

  function batch (start) {
    if (start >= N) return bootstrapped()
    var n = Math.min(BATCH, N - start)
    var pending = n
    for (var i = 0; i < n; i++) {
      make(bootAddr, function (node) {
        nodes.push(node)
        var done = false
        var timer = setTimeout(function () { finish(false) }, 60000)
        node.ready(function () { finish(true) })
        function finish (ok) {
          if (done) return
          done = true
          clearTimeout(timer)
          if (ok) ready++
          else failed++
          if (--pending === 0) batch(start + n)
        }
      })
    }
  }

  function bootstrapped () {
    out.bootstrap_s = now() - t0
    out.bootstrapped = ready
    out.bootstrap_failed = failed
    announces()
  }

  var keys = []
  var announcers = []
  function announces () {
    var step = Math.max(1, Math.floor(nodes.length / A))
    for (var i = 0; i < A && i * step < nodes.length; i++) {
      announcers.push(nodes[i * step])
      keys.push(crypto.createHash('sha256').update(nodes[i * step].id).digest())
    }
    var lat = []
    var ok = 0
    var t = now()
    ;(function next (i) {
      if (i >= announcers.length) {
        out.announce_s = now() - t
        out.announce_ok = ok
        out.announce_p50_ms = quantile(lat, 0.5) * 1000
        out.announce_p90_ms = quantile(lat, 0.9) * 1000
        return lookups()
      }
      var s = now()
      announcers[i].announce(keys[i], { port: 0 }, function (err) {
        lat.push(now() - s)
        if (!err) ok++
        next(i + 1)
      })
    })(0)
  }

  function lookups () {
    var lat = []
    var found = 0
    var t = now()
    ;(function next (i) {
      if (i >= L) {
        out.lookup_s = now() - t
        out.lookups = L
        out.lookup_found = found
        out.lookup_p50_ms = quantile(lat, 0.5) * 1000
        out.lookup_p90_ms = quantile(lat, 0.9) * 1000
        return idle()
      }
      var k = i % keys.length
      var port = announcers[k].address().port
      var origin = nodes[Math.floor(rand() * nodes.length)]
      if (origin === announcers[k]) origin = nodes[(nodes.indexOf(origin) + 1) % nodes.length]
      var s = now()
      origin.lookup(keys[k], function (err, results) {
        lat.push(now() - s)
        var hit = !err && (results || []).some(function (r) {
          return (r.peers || []).some(function (p) { return p.port === port })
        })
        if (hit) found++
        next(i + 1)
      })
    })(0)
  }

  function idle () {
    var mem = process.memoryUsage()
    out.rss_mb = mem.rss / 1048576
    var c0 = process.cpuUsage()
    var t = now()
    setTimeout(function () {
      var c = process.cpuUsage(c0)
      var wall = now() - t
      out.idle_s = wall
      out.idle_cpu_pct = IDLE > 0 ? 100 * (c.user + c.system) / 1e6 / wall : null
      out.peak_rss_mb = process.resourceUsage().maxRSS / 1024
      var sizes = nodes.map(function (n) { return n.dht.nodes.count() })
      out.table_median = quantile(sizes, 0.5)
      process.stdout.write(JSON.stringify(out) + '\n', function () { process.exit(0) })
    }, IDLE * 1000)
  }

  batch(0)
})
