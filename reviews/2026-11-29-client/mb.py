import asyncio
from cipherpost.server.provisioning import Mailboxes
async def main():
    m = Mailboxes()
    a = m.open(0, 600_000)
    t1 = asyncio.create_task(m.take(a, 1, 5)); t2 = asyncio.create_task(m.take(a, 1, 5))
    await asyncio.sleep(0.05)
    print("put", m.put(a, b"sealed", 2))
    print(await t1, await t2)
asyncio.run(main())
