// Types of index.js: everything of base.js, each system as a namespace, the client classes.
export * from './base.js';
export * as laptimes from './laptimes.js';
export * as afc from './afc.js';
export * as race from './race.js';
export * as collab from './collab.js';
export * as dcdock from './dcdock.js';
export * as v2 from './v2.js';
export { LaptimesClient } from './laptimes.js';
export { AfcClient } from './afc.js';
export { RaceClient } from './race.js';
export { CollabClient } from './collab.js';
export { DcdockClient } from './dcdock.js';
