// This browser's generations, kept in IndexedDB: the server stores no prompts and no images.

const DATABASE = "imagegen-studio";
const STORE = "generations";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { autoIncrement: true });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, work) {
  const database = await open();
  return new Promise((resolve, reject) => {
    const transaction = database.transaction(STORE, mode);
    const request = work(transaction.objectStore(STORE));
    transaction.oncomplete = () => resolve(request.result);
    transaction.onerror = () => reject(transaction.error);
  });
}

export const remember = (generation) => transact("readwrite", (store) => store.add(generation));

export const generations = async () => (await transact("readonly", (store) => store.getAll())).reverse();

export const forget = () => transact("readwrite", (store) => store.clear());
