/**
 * HCL's dynamic blocks, as Packer 1.6.6 expands them (hcl/v2/ext/dynblock) inside build and source
 * blocks and their nested blocks: `dynamic "provisioner" { for_each = ..., iterator = NAME,
 * labels = [...], content { ... } }` becomes one block per element, in order (a map's keys sorted, as HCL
 * iterates them), with NAME.key and NAME.value (NAME defaults to the block type) bound in its content.
 * Packer refuses `dynamic` at the top level of a file ("Blocks of type "dynamic" are not expected here").
 */
import { HclError, attributesOf, blocksOf, type Block, type Body, type Expr } from './hcl.js';
import { evaluate, isObject, typeName, type EvalContext, type Value } from './eval.js';

function bind(body: Body, names: Record<string, Value>): Body {
  return {
    items: body.items.map((item) =>
      item.kind === 'attribute'
        ? { ...item, expr: { kind: 'bound', names, expr: item.expr, pos: item.expr.pos } as Expr }
        : { ...item, body: bind(item.body, names) },
    ),
  };
}

/** The body with its own dynamic blocks expanded (nested ones are expanded when their body is read). */
export function expandDynamic(body: Body, ctx: EvalContext): Body {
  if (!body.items.some((i) => i.kind === 'block' && i.type === 'dynamic')) return body;
  const items: Body['items'] = [];
  for (const item of body.items) {
    if (item.kind !== 'block' || item.type !== 'dynamic') {
      items.push(item);
      continue;
    }
    const fail = (problem: string, fix: string): never => {
      throw new HclError(ctx.file, item.pos, problem, fix);
    };
    const type = item.labels[0];
    if (item.labels.length !== 1 || !type)
      fail(
        'a dynamic block has one label: the type of the blocks it makes',
        'write dynamic "provisioner" { for_each = ..., content { ... } }',
      );
    const attrs = new Map(attributesOf(item.body).map((a) => [a.name, a]));
    for (const a of attrs.keys())
      if (!['for_each', 'iterator', 'labels'].includes(a))
        fail(
          `dynamic "${type}": unknown attribute "${a}"`,
          'a dynamic block has for_each, iterator, labels and one content block',
        );
    const contents = blocksOf(item.body, 'content');
    if (contents.length !== 1 || blocksOf(item.body).length !== 1)
      fail(
        `dynamic "${type}" needs exactly one content block (and no other block)`,
        "put the block's body in content { ... }",
      );
    const forEach = attrs.get('for_each');
    if (!forEach)
      fail(`dynamic "${type}" has no for_each`, 'add for_each = a list or map; one block is made per element');
    const iterExpr = attrs.get('iterator')?.expr;
    if (iterExpr && iterExpr.kind !== 'variable')
      fail(
        `dynamic "${type}": iterator must be a bare name`,
        'write iterator = NAME (no quotes) and use NAME.value in content',
      );
    const iter = iterExpr?.kind === 'variable' ? iterExpr.name : type!;
    const coll = evaluate(forEach!.expr, ctx);
    let pairs: [Value, Value][];
    if (Array.isArray(coll)) pairs = coll.map((v, i) => [i, v]);
    else if (isObject(coll))
      pairs = Object.keys(coll)
        .sort()
        .map((k) => [k, coll[k]!]);
    else
      fail(
        `dynamic "${type}": for_each must be a list or a map, not ${coll === null ? 'null' : `a ${typeName(coll)}`}`,
        'give for_each a list or a map',
      );
    for (const [key, value] of pairs!) {
      const names = { [iter]: { key, value } as Value };
      const labelsAttr = attrs.get('labels');
      let labels: string[] = [];
      if (labelsAttr) {
        const l = evaluate({ kind: 'bound', names, expr: labelsAttr.expr, pos: labelsAttr.expr.pos }, ctx);
        if (!Array.isArray(l) || l.some((x) => typeof x !== 'string'))
          fail(`dynamic "${type}": labels must be a list of strings`, 'write labels = ["shell"]');
        labels = l as string[];
      }
      const block: Block = {
        kind: 'block',
        type: type!,
        labels,
        body: bind(contents[0]!.body, names),
        pos: contents[0]!.pos,
      };
      items.push(block);
    }
  }
  return { items };
}
