// TypeDoc plugin: the API's callables must be documented the way sharp's are, not just have a
// summary (TypeDoc's own notDocumented check). Every exported function, every public method and
// constructor of an exported class needs a summary, an @param for each parameter, @returns when it
// returns something, and an @example; methods of exported interfaces need all but the example.
// Each gap is a TypeDoc warning, which treatWarningsAsErrors (typedoc.json) turns into a failed build.
import { Application, ReflectionKind } from 'typedoc';

const voidish = new Set(['void', 'undefined', 'never']);

function returnsSomething(type) {
  if (!type) return false;
  if (type.type === 'intrinsic') return !voidish.has(type.name);
  if (type.type === 'reference' && type.name === 'Promise') return returnsSomething(type.typeArguments?.[0]);
  return true;
}

const hasText = (parts) => (parts ?? []).some((p) => p.text.trim() !== '');

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.on(Application.EVENT_VALIDATE_PROJECT, (project) => {
    const kinds = ReflectionKind.CallSignature | ReflectionKind.ConstructorSignature;
    for (const sig of project.getReflectionsByKind(kinds)) {
      const owner = sig.parent;
      if (!owner || owner.flags.isPrivate || owner.flags.isProtected) continue;
      const container = owner.parent;
      const inClass = container?.kindOf(ReflectionKind.Class);
      const isFunction = owner.kindOf(ReflectionKind.Function) && container?.kindOf(ReflectionKind.Project | ReflectionKind.Module);
      const isMethod = owner.kindOf(ReflectionKind.Method) && (inClass || container?.kindOf(ReflectionKind.Interface));
      const isConstructor = owner.kindOf(ReflectionKind.Constructor) && inClass;
      if (!isFunction && !isMethod && !isConstructor) continue;
      const name = owner.getFriendlyFullName();
      const comment = sig.comment ?? owner.comment;
      const gaps = [];
      if (!hasText(comment?.summary)) gaps.push('a summary');
      for (const p of sig.parameters ?? []) if (!hasText(p.comment?.summary)) gaps.push(`@param ${p.name}`);
      if (!isConstructor && returnsSomething(sig.type) && !comment?.getTag('@returns')) gaps.push('@returns');
      if ((isFunction || inClass) && !comment?.getTag('@example')) gaps.push('@example');
      if (gaps.length) app.logger.warn(`${name} (${ReflectionKind.singularString(owner.kind)}) lacks ${gaps.join(', ')}`);
    }
  });
}
