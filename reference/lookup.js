'use strict'
// The one lookup of the Node.js reference tree, shared by every Node.js script
// in this repository (tests/interop/*.js, scripts/golden/make_vectors.js, the
// benchmarks); tests/node_reference.py applies the same rule on the Python side:
//
//   $HYPERDHT_NODE_MODULES, if set: a node_modules directory (the one that
//                           `npm ci --prefix DIR` makes is DIR/node_modules);
//   else reference/node_modules, installed by `npm ci --prefix reference`.
//
//   var ref = require('../../reference/lookup')
//   var hyperdht = ref.require('hyperdht')            // a package from the tree
//   var proto = ref.resolve('hyperdht/schema.proto')  // a file's path in it
//   ref.dir                                           // the directory itself
//
// The packages loaded so resolve their own dependencies inside the tree, as
// npm installed them.
var path = require('path')

var ENV = 'HYPERDHT_NODE_MODULES'
var dir = process.env[ENV]
  ? path.resolve(process.env[ENV])
  : path.join(__dirname, 'node_modules')

function resolve (id) {
  try {
    return require.resolve(path.join(dir, id))
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err
    var hint = process.env[ENV]
      ? 'check ' + ENV + '=' + process.env[ENV]
      : 'run npm ci --prefix reference'
    var e = new Error('cannot find ' + id + ' in ' + dir + ': ' + hint)
    e.code = 'MODULE_NOT_FOUND'
    throw e
  }
}

function load (id) {
  return require(resolve(id))
}

module.exports = { dir: dir, resolve: resolve, require: load }
