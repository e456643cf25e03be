// lib/addon-types.ts types the addon by hand. This reads those types with the TypeScript compiler and
// checks them against what the addon registers: every export, static and method by name, with the
// most arguments each takes (the addon enforces that number), and every accessor on the prototypes.
import { join } from 'node:path';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

import { packageRoot } from '../lib/locate.js';
import { native } from '../lib/native.js';
import { randn } from '../lib/tensor.js';
import { expectError } from './helpers.js';

/** The instance interface of each class export (the one thing the types do not say directly). */
const INSTANCES: Record<string, string> = { Model: 'NativeModel', Decoder: 'NativeDecoder', ContinuousDecoder: 'NativeContinuousDecoder', Index: 'NativeIndex', Optimizer: 'NativeOptimizer', ProcessGroup: 'NativeProcessGroup' };

interface Surface {
  /** "fn", "Class.fn", "Class#fn" -> most arguments */
  arities: Record<string, number>;
  /** "Class#prop": accessors and fields of the instance interfaces */
  accessors: string[];
}

function typedSurface(): Surface {
  const file = join(packageRoot, 'lib', 'addon-types.ts');
  const program = ts.createProgram([file], { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, strict: true });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file)!;
  const interfaces = new Map<string, ts.Type>();
  ts.forEachChild(source, (node) => {
    if (ts.isInterfaceDeclaration(node)) interfaces.set(node.name.text, checker.getTypeAtLocation(node));
  });
  const arity = (t: ts.Type) => Math.max(...t.getCallSignatures().map((s) => s.getParameters().length));
  const members = (t: ts.Type) => t.getProperties().map((p) => [p.getName(), checker.getTypeOfSymbolAtLocation(p, source)] as const);
  const surface: Surface = { arities: {}, accessors: [] };
  for (const [name, type] of members(interfaces.get('NativeAddon')!)) {
    if (name in INSTANCES) {
      for (const [fn, t] of members(type)) if (t.getCallSignatures().length) surface.arities[`${name}.${fn}`] = arity(t);
      for (const [fn, t] of members(interfaces.get(INSTANCES[name]!)!)) {
        if (t.getCallSignatures().length) surface.arities[`${name}#${fn}`] = arity(t);
        else surface.accessors.push(`${name}#${fn}`);
      }
    } else if (type.getCallSignatures().length) surface.arities[name] = arity(type);
  }
  return surface;
}

describe('the addon and lib/addon-types.ts agree', () => {
  const addon = native() as unknown as Record<string, unknown>;
  const typed = typedSurface();

  it('the same exports, statics and methods, with the same most arguments', () => {
    expect(Object.keys(typed.arities).length).toBeGreaterThan(60);
    // sorted, so that a difference shows as a readable diff
    const sorted = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
    expect(sorted(typed.arities)).toEqual(sorted(native().signatures));
  });

  it('every one of them exists on the loaded addon, and every typed accessor too', () => {
    for (const name of Object.keys(native().signatures)) {
      const [, cls, kind, fn] = /^(?:(\w+)([.#]))?(\w+)$/.exec(name)!;
      const owner = cls ? (kind === '.' ? addon[cls] : (addon[cls] as { prototype: object }).prototype) : addon;
      expect(typeof (owner as Record<string, unknown>)[fn!], name).toBe('function');
    }
    for (const name of typed.accessors) {
      const [cls, prop] = name.split('#') as [string, string];
      const proto = (addon[cls] as { prototype: object }).prototype;
      expect(Object.getOwnPropertyDescriptor(proto, prop)?.get, name).toBeTypeOf('function');
    }
    // and nothing exported that the types leave out
    const exported = Object.keys(addon).filter((k) => typeof addon[k] === 'function' && !(k in INSTANCES));
    expect(exported.sort()).toEqual(Object.keys(typed.arities).filter((k) => !/[.#]/.test(k)).sort());
  });

  it('an extra argument is refused, naming the op', () => {
    const a = randn([2, 2]);
    expectError(() => (native().matmul as (...args: unknown[]) => unknown)(a.handle, a.handle, a.handle), TypeError, 'matmul takes at most 2 arguments, got 3');
    expectError(() => (native().toTypedArray as (...args: unknown[]) => unknown)(a.handle, 1), TypeError, 'toTypedArray takes at most 1 argument, got 2');
    a.dispose();
  });
});
