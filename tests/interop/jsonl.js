'use strict'
// JSON-lines stdio plumbing shared by peer.js and capture.js.
//
// - write(obj): one JSON object per line on stdout.
// - serve(handlers, onExit): reads one JSON command per line from stdin,
//   dispatches {"seq": n, "cmd": name, ...args} to handlers[name](args, done)
//   and writes exactly one reply per command:
//     {"seq": n, "ok": true, ...result}  or  {"seq": n, "ok": false, "error": "..."}
//   (an error reply may carry extra fields, e.g. partial results).
//   A handler may answer synchronously or later; throwing (synchronously or in
//   a guarded callback) turns into an ok:false reply. When stdin closes the
//   process exits (so a killed parent never leaves a Node peer behind).

var readline = require('readline')

var exiting = false

function write (obj) {
  try {
    process.stdout.write(JSON.stringify(obj) + '\n')
  } catch (err) {
    // stdout gone (parent died): nothing left to talk to.
    process.exit(0)
  }
}

function errorMessage (err) {
  if (!err) return 'unknown error'
  if (typeof err === 'string') return err
  return err.message || String(err)
}

function serve (handlers, onExit) {
  process.stdout.on('error', function () { process.exit(0) })

  var rl = readline.createInterface({ input: process.stdin, terminal: false })

  rl.on('line', function (line) {
    line = line.trim()
    if (!line) return
    var msg
    try {
      msg = JSON.parse(line)
    } catch (err) {
      write({ seq: null, ok: false, error: 'invalid JSON: ' + errorMessage(err) })
      return
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
      write({ seq: null, ok: false, error: 'a command must be a JSON object' })
      return
    }
    dispatch(handlers, msg)
  })

  rl.on('close', function () {
    shutdown(onExit, 0)
  })
}

function dispatch (handlers, msg) {
  var seq = msg.seq === undefined ? null : msg.seq
  var replied = false

  function done (err, result) {
    if (replied) return
    replied = true
    // An error reply may carry partial results too (e.g. a query's results
    // collected before it failed).
    var reply = err ? { seq: seq, ok: false, error: errorMessage(err) } : { seq: seq, ok: true }
    if (result) {
      for (var k in result) {
        if (k !== 'seq' && k !== 'ok' && k !== 'error') reply[k] = result[k]
      }
    }
    write(reply)
  }

  // Wrap a callback so that anything it throws becomes this command's error.
  done.guard = function (fn) {
    return function () {
      try {
        return fn.apply(this, arguments)
      } catch (err) {
        done(err)
      }
    }
  }

  var name = msg.cmd
  if (typeof name !== 'string' || !Object.prototype.hasOwnProperty.call(handlers, name)) {
    done(new Error('unknown command: ' + JSON.stringify(name === undefined ? null : name)))
    return
  }

  try {
    handlers[name](msg, done)
  } catch (err) {
    done(err)
  }
}

function shutdown (onExit, code) {
  if (exiting) return
  exiting = true
  try {
    if (onExit) onExit()
  } catch (err) {
    // best effort: we are leaving anyway
  }
  // stdout is a pipe: writes are synchronous on POSIX, so nothing is lost.
  setImmediate(function () { process.exit(code || 0) })
}

module.exports = {
  write: write,
  serve: serve,
  shutdown: shutdown,
  errorMessage: errorMessage
}
