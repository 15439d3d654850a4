// Each account's generations, kept in this browser (IndexedDB): the server stores no prompts and no
// images. One database per account, deleted at sign-out, so the next person to sign in on this
// browser never sees them, even where a session ended without signing out.

const PREFIX = "imagegen-studio:";
const STORE = "generations";

// Before history was kept per account, every account shared this one.
indexedDB.deleteDatabase("imagegen-studio");

function open(account) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(PREFIX + account, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { autoIncrement: true });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(account, mode, work) {
  const database = await open(account);
  return new Promise((resolve, reject) => {
    const transaction = database.transaction(STORE, mode);
    const request = work(transaction.objectStore(STORE));
    transaction.oncomplete = () => {
      database.close(); // a connection left open would hold off deleting the database at sign-out
      resolve(request.result);
    };
    transaction.onerror = () => reject(transaction.error);
  });
}

export const remember = (account, generation) => transact(account, "readwrite", (store) => store.add(generation));

export const generations = async (account) => (await transact(account, "readonly", (store) => store.getAll())).reverse();

// "Clear history", and sign-out: the account's database itself goes.
export function forget(account) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(PREFIX + account);
    request.onsuccess = () => resolve();
    request.onerror = () => reject(request.error);
  });
}
