// The TypeScript declarations (src/*.d.ts) are checked, not only written:
//
// - every JSON example of docs/protocol/*.md (the test vectors the Rust server's own types decode
//   and re-encode, crates/protocol/tests/doc_vectors*.rs) is assigned to the type the client
//   declares for it, and `tsc --noEmit` must accept all of them, while each example made wrong on
//   purpose (an unknown field, an unknown `sb`) must be refused (`@ts-expect-error`).
//   ../doc_examples.py writes test/types/doc-examples.generated.ts; tsc also checks the
//   declarations and the usage in test/types/api.ts;
// - every runtime export (and public class member) of src/*.js is declared, and everything
//   declared exists at runtime;
// - the `type` tags of every system's message unions, the v2 frame kinds and recovery reasons
//   and the system streams are the ones the Rust sources list.
//
// No server is needed. Python 3 runs the generator (`PYTHON`, default `python3`).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';

const JS = join(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(JS, 'src');
const MODULES = ['base', 'laptimes', 'afc', 'race', 'collab', 'dcdock', 'v2', 'index'];
const SYSTEMS = ['laptimes', 'afc', 'race', 'collab', 'dcdock'];

let manifest;
let program;
let checker;
let tmp;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'sb-types-'));
  const gen = spawnSync(
    process.env.PYTHON ?? 'python3',
    ['../doc_examples.py', '--ts', 'test/types/doc-examples.generated.ts', '--manifest', join(tmp, 'manifest.json')],
    { cwd: JS, encoding: 'utf8' },
  );
  assert.equal(gen.status, 0, `doc_examples.py failed:\n${gen.stdout}${gen.stderr}`);
  console.log(gen.stdout.trimEnd());
  manifest = JSON.parse(readFileSync(join(tmp, 'manifest.json'), 'utf8'));
  const config = ts.getParsedCommandLineOfConfigFile(join(JS, 'tsconfig.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => assert.fail(ts.flattenDiagnosticMessageText(d.messageText, '\n')),
  });
  program = ts.createProgram({ rootNames: config.fileNames, options: config.options });
  checker = program.getTypeChecker();
});

after(() => rmSync(tmp, { recursive: true, force: true }));

test('tsc --noEmit accepts the declarations, the API usage and every documented example', () => {
  const tsc = spawnSync(process.execPath, [join(JS, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', 'tsconfig.json'], {
    cwd: JS,
    encoding: 'utf8',
  });
  assert.equal(tsc.status, 0, `tsc failed:\n${tsc.stdout}${tsc.stderr}`);
  const files = program.getRootFileNames().map((f) => f.slice(JS.length + 1));
  assert.ok(files.includes('test/types/doc-examples.generated.ts'), files.join(', '));
  assert.ok(files.includes('test/types/api.ts'), files.join(', '));
  // At least the 137 test vectors of the Rust tests, each also made wrong at least once.
  const vectors = manifest.examples.filter((e) => e.tag !== 'response');
  assert.ok(vectors.length >= 137, `${vectors.length} examples`);
  assert.ok(manifest.mutants >= manifest.examples.length, `${manifest.mutants} wrong examples`);
});

test('every documented example is in the check file, under its document and line', () => {
  const text = readFileSync(join(JS, 'test', 'types', 'doc-examples.generated.ts'), 'utf8');
  for (const e of manifest.examples) {
    assert.ok(text.includes(`// docs/protocol/${e.doc}:${e.line} (${e.tag})\n`), `${e.doc}:${e.line}`);
  }
  for (const doc of SYSTEMS.map((s) => `${s}-v1.md`).concat('v2.md')) {
    const text = readFileSync(join(JS, '..', '..', 'docs', 'protocol', doc), 'utf8');
    const tagged = text.match(/^\s*```json (client-to-server|server-to-client|publish|v2-client|v2-server)\s*$/gm) ?? [];
    const found = manifest.examples.filter((e) => e.doc === doc && e.tag !== 'response');
    assert.equal(found.length, tagged.length, doc);
  }
});

function moduleSymbol(name) {
  const sf = program.getSourceFile(join(SRC, `${name}.d.ts`));
  assert.ok(sf, `src/${name}.d.ts is not part of the program`);
  return { sf, sym: checker.getSymbolAtLocation(sf) };
}

const resolve = (sym) => (sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym);

/** Exports of a declaration module: name -> resolved symbol. */
function declaredExports(name) {
  const { sym } = moduleSymbol(name);
  return new Map(checker.getExportsOfModule(sym).map((s) => [s.name, resolve(s)]));
}

const isClass = (v) => typeof v === 'function' && /^class\b/.test(Function.prototype.toString.call(v));

function instanceOf(Cls, mod) {
  if (Cls.prototype instanceof Error) return new Cls(400, {});
  if (Cls === mod.ReconnectingClient || Cls.prototype instanceof mod.ReconnectingClient) {
    return new Cls(undefined, { token: 'token' });
  }
  return new Cls();
}

function runtimeMembers(obj, stop) {
  const names = new Set();
  for (let o = obj; o && o !== stop; o = Object.getPrototypeOf(o)) {
    for (const n of Object.getOwnPropertyNames(o)) if (!n.startsWith('_') && n !== 'constructor') names.add(n);
  }
  return names;
}

const ownDeclaration = (sym) => (sym.declarations ?? []).some((d) => d.getSourceFile().fileName.startsWith(SRC));

for (const name of MODULES) {
  test(`src/${name}.d.ts declares exactly what src/${name}.js exports`, async () => {
    const mod = await import(join(SRC, `${name}.js`));
    const base = await import(join(SRC, 'base.js'));
    const declared = declaredExports(name);
    const values = [...declared].filter(([, s]) => s.flags & ts.SymbolFlags.Value).map(([n]) => n);
    assert.deepEqual(values.sort(), Object.keys(mod).sort(), 'value exports');
    for (const [exported, Cls] of Object.entries(mod)) {
      if (!isClass(Cls)) continue;
      const sym = declared.get(exported);
      const decl = sym.valueDeclaration ?? sym.declarations[0];
      const instanceType = checker.getDeclaredTypeOfSymbol(sym);
      const staticType = checker.getTypeOfSymbolAtLocation(sym, decl);
      const instance = instanceOf(Cls, base);
      const inst = new Set(checker.getPropertiesOfType(instanceType).map((p) => p.name));
      const stat = new Set(checker.getPropertiesOfType(staticType).map((p) => p.name));
      const stop = instance instanceof Error ? Error.prototype : Object.prototype;
      for (const n of runtimeMembers(instance, stop)) assert.ok(inst.has(n), `${exported}#${n} is not declared`);
      for (const n of runtimeMembers(Cls, instance instanceof Error ? Error : Function.prototype)) {
        if (!['length', 'name', 'prototype'].includes(n)) assert.ok(stat.has(n), `${exported}.${n} is not declared`);
      }
      for (const p of checker.getPropertiesOfType(instanceType)) {
        if (ownDeclaration(p) && !p.name.startsWith('__@')) assert.ok(p.name in instance, `${exported}#${p.name} is declared but missing`);
      }
      for (const p of checker.getPropertiesOfType(staticType)) {
        if (ownDeclaration(p)) assert.ok(p.name in Cls, `${exported}.${p.name} is declared but missing`);
      }
    }
  });
}

/** The `key` tags of a union type alias's members: literals, and whether one takes any string. */
function tags(moduleName, alias, key = 'type') {
  const { sf } = moduleSymbol(moduleName);
  const sym = declaredExports(moduleName).get(alias);
  assert.ok(sym, `${moduleName}.${alias} is not declared`);
  const type = checker.getDeclaredTypeOfSymbol(sym);
  const literals = new Set();
  let open = false;
  for (const member of type.isUnion() ? type.types : [type]) {
    const prop = checker.getPropertyOfType(member, key);
    if (!prop) continue;
    const t = checker.getTypeOfSymbolAtLocation(prop, sf);
    for (const part of t.isUnion() ? t.types : [t]) {
      if (part.isStringLiteral()) literals.add(part.value);
      else if (part.flags & (ts.TypeFlags.String | ts.TypeFlags.TemplateLiteral)) open = true;
      else assert.fail(`${moduleName}.${alias}: a \`${key}\` of type ${checker.typeToString(part)}`);
    }
  }
  return { literals, open };
}

for (const system of SYSTEMS) {
  test(`${system}: the message tags and stream are the Rust server's`, () => {
    const rust = manifest.rust[system];
    for (const [alias, listed] of [['ClientMessage', rust.client_types], ['ServerMessage', rust.server_types]]) {
      const { literals, open } = tags(system, alias);
      const never = [...literals].filter((t) => !listed.includes(t));
      assert.deepEqual(never, [], `${system}.${alias}: tags the server never uses`);
      if (!open) assert.deepEqual([...literals].sort(), [...listed].sort(), `${system}.${alias}: tags without a type`);
    }
    const stream = declaredExports(system).get('Stream');
    const streamType = checker.typeToString(checker.getDeclaredTypeOfSymbol(stream));
    if (rust.stream !== null) assert.equal(streamType, JSON.stringify(rust.stream));
  });
}

test('v2: the frame kinds, reasons and subprotocol are the Rust server\'s', async () => {
  const rust = manifest.rust.v2;
  const { literals, open } = tags('v2', 'ServerFrame', 'sb');
  assert.ok(!open);
  assert.deepEqual([...literals].sort(), [...rust.server_kinds].sort());
  const reasons = checker.getDeclaredTypeOfSymbol(declaredExports('v2').get('NotRecoveredReason'));
  assert.deepEqual(reasons.types.map((t) => t.value).sort(), [...rust.reasons].sort());
  const v2 = await import(join(SRC, 'v2.js'));
  assert.deepEqual(v2.SERVER_KINDS, rust.server_kinds);
  assert.deepEqual(v2.NOT_RECOVERED_REASONS, rust.reasons);
  assert.equal(v2.SUBPROTOCOL, rust.subprotocol);
});
